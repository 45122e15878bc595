"""Recording what shoppers do: the public `record_event` API, the visitor cookie, and the merge at login.

A host shop calls `record_event(request, "view", product_id=...)` from its views; the JS tracker and
back-end integrations go through the ingest API, which ends up in `store_events` here too.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from recommendations.conf import EVENT_TYPES, rec_settings
from recommendations.models import Event, shopper_key

logger = logging.getLogger(__name__)

VISITOR_ATTR = "recommendations_visitor_id"


def new_visitor_id() -> str:
    return secrets.token_hex(16)


def valid_visitor_id(value: str | None) -> bool:
    return bool(value) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def get_visitor_id(request: HttpRequest) -> str:
    """The visitor id of this browser; assigns one (set as a cookie on the way out) if it has none."""
    visitor_id = getattr(request, VISITOR_ATTR, None)
    if visitor_id:
        return visitor_id
    cookie = request.COOKIES.get(rec_settings.VISITOR_COOKIE_NAME)
    visitor_id = cookie if valid_visitor_id(cookie) else new_visitor_id()
    setattr(request, VISITOR_ATTR, visitor_id)
    return visitor_id


def get_user_id(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return str(user.pk)
    return ""


def get_shopper(request: HttpRequest) -> str:
    """The engine's key for whoever is making this request."""
    return shopper_key(get_user_id(request), get_visitor_id(request))


class VisitorMiddleware:
    """Gives every browser a stable, random visitor id cookie so anonymous behaviour can be learnt from."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        visitor_id = get_visitor_id(request)
        response = self.get_response(request)
        if request.COOKIES.get(rec_settings.VISITOR_COOKIE_NAME) != visitor_id:
            from django.conf import settings

            response.set_cookie(
                rec_settings.VISITOR_COOKIE_NAME,
                visitor_id,
                max_age=rec_settings.VISITOR_COOKIE_AGE,
                httponly=True,
                samesite="Lax",
                secure=getattr(settings, "RECOMMENDATIONS_VISITOR_COOKIE_SECURE", False),
            )
        return response


def build_event(
    event_type: str,
    *,
    user_id: str = "",
    visitor_id: str = "",
    product_id: str | int | None = None,
    quantity: int = 1,
    value: Decimal | float | str | None = None,
    query: str = "",
    placement: str = "",
    recommendation_id: str = "",
    context: dict[str, Any] | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    client_time: datetime | None = None,
) -> Event:
    """An unsaved Event with the derived fields filled in; for bulk paths (API, imports)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    if not (user_id or visitor_id):
        raise ValueError("an event needs a user_id or a visitor_id")
    now = timezone.now()
    return Event(
        event_id=event_id or uuid.uuid4().hex,
        event_type=event_type,
        user_id=str(user_id or ""),
        visitor_id=str(visitor_id or ""),
        shopper=shopper_key(str(user_id or ""), str(visitor_id or "")),
        product_id="" if product_id is None else str(product_id),
        quantity=quantity,
        value=None if value is None else Decimal(str(value)),
        query=(query or "")[:255],
        occurred_at=occurred_at or client_time or now,
        client_time=client_time,
        received_at=now,
        placement=placement or "",
        recommendation_id=recommendation_id or "",
        context=context or {},
    )


def record_event(request: HttpRequest | None, event_type: str, **fields: Any) -> Event | None:
    """Record one event for the shopper behind `request` (or the user_id / visitor_id given).

    Tracking must never break the shop: a failure is logged and None is returned.
    """
    try:
        if request is not None:
            fields.setdefault("user_id", get_user_id(request))
            fields.setdefault("visitor_id", get_visitor_id(request))
        event = build_event(event_type, **fields)
        with transaction.atomic():
            event.save(force_insert=True)
        on_event_recorded(event)
        return event
    except IntegrityError:
        logger.info("duplicate event_id %s ignored", fields.get("event_id"))
        return None
    except Exception:
        logger.exception("could not record %s event", event_type)
        return None


INSERT_BATCH = 1000
# Every Event column the bulk writers (ingest, import) fill, in the order of their INSERT / COPY.
EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "user_id",
    "visitor_id",
    "shopper",
    "product_id",
    "quantity",
    "value",
    "query",
    "occurred_at",
    "client_time",
    "received_at",
    "placement",
    "recommendation_id",
    "context",
)


def _insert_postgresql(events: list[Event]) -> set[str]:
    """One `INSERT ... ON CONFLICT DO NOTHING RETURNING` per chunk: the ids it returns are exactly those stored."""
    opts = Event._meta
    qn = connection.ops.quote_name
    columns = ", ".join(qn(opts.get_field(name).column) for name in EVENT_COLUMNS)
    row = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
    event_id_column = qn(opts.get_field("event_id").column)
    stored: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(events), INSERT_BATCH):
            chunk = events[start : start + INSERT_BATCH]
            # Only table and column names from the model's own metadata are formatted in; values are parameters.
            sql = (
                f"INSERT INTO {qn(opts.db_table)} ({columns}) VALUES {', '.join([row] * len(chunk))} "  # noqa: S608
                f"ON CONFLICT ({event_id_column}) DO NOTHING RETURNING {event_id_column}"
            )
            params: list[Any] = []
            for e in chunk:
                params.extend(
                    (
                        e.event_id,
                        e.event_type,
                        e.user_id,
                        e.visitor_id,
                        e.shopper,
                        e.product_id,
                        e.quantity,
                        e.value,
                        e.query,
                        e.occurred_at,
                        e.client_time,
                        e.received_at,
                        e.placement,
                        e.recommendation_id,
                        json.dumps(e.context, cls=DjangoJSONEncoder),
                    )
                )
            cursor.execute(sql, params)
            stored.update(r[0] for r in cursor.fetchall())
    return stored


def insert_events(events: Iterable[Event]) -> list[Event]:
    """Insert events, skipping ids already stored or repeated in the batch; returns the events actually stored.

    On PostgreSQL the answer is exact even when another request races this one with the same ids. Elsewhere
    (SQLite for the demo) it is one read of existing ids and a bulk insert that ignores conflicts, exact unless a
    concurrent writer stores the same id in between.
    """
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    if not unique:
        return []
    if connection.vendor == "postgresql":
        stored = _insert_postgresql(list(unique.values()))
        return [e for eid, e in unique.items() if eid in stored]
    existing = set(Event.objects.filter(event_id__in=list(unique)).values_list("event_id", flat=True))
    fresh = [e for eid, e in unique.items() if eid not in existing]
    # ignore_conflicts keeps a replay racing this batch from failing the whole insert.
    Event.objects.bulk_create(fresh, ignore_conflicts=True, batch_size=INSERT_BATCH)
    return fresh


def store_events(events: Iterable[Event]) -> tuple[int, int]:
    """Insert events, skipping ids already stored or repeated in the batch; returns (accepted, duplicates)."""
    events = list(events)
    stored = insert_events(events)
    return len(stored), len(events) - len(stored)


def on_event_recorded(event: Event) -> None:
    """After an event lands: refresh the shopper's list if the event says something about their taste."""
    on_events_stored([event])


def on_events_stored(events: list[Event]) -> None:
    """Called once per ingest batch with the events it stored: one debounced refresh per shopper who showed taste."""
    from recommendations.tasks import schedule_refresh

    training = {t for t, w in rec_settings.EVENT_WEIGHTS.items() if w > 0}
    schedule_refresh(e.shopper for e in events if e.event_type in training and e.product_id)


def merge_visitor(visitor_id: str, user_id: str) -> int:
    """Link a visitor's anonymous events to the user who just logged in; returns how many moved."""
    if not (visitor_id and user_id):
        return 0
    return Event.objects.filter(visitor_id=visitor_id, user_id="").update(
        user_id=str(user_id), shopper=shopper_key(str(user_id), visitor_id)
    )


def on_user_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is None:
        return
    try:
        if merge_visitor(get_visitor_id(request), str(user.pk)):
            from recommendations.tasks import schedule_refresh

            schedule_refresh([shopper_key(str(user.pk), "")])
    except Exception:
        logger.exception("could not merge visitor events at login")
