"""Events in: the public `record_event`, `build_event` for the bulk paths (ingest API, imports), the bulk insert that
skips ids already stored, and the `events_stored` signal the lists' refresh listens to."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from recommendations import metrics, signals
from recommendations.conf import EVENT_TYPES, rec_settings
from recommendations.models import Event, shopper_key
from recommendations.tracking.attribution import attribute
from recommendations.tracking.consent import may_track, opted_out_users
from recommendations.tracking.identity import get_user_id, get_visitor_id

logger = logging.getLogger(__name__)


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
    variant: str = "",
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
        variant=variant or "",
        context=context or {},
    )


def record_event(request: HttpRequest | None, event_type: str, **fields: Any) -> Event | None:
    """Record one event for the shopper behind `request` (or the user_id / visitor_id given).

    Nothing is stored (None) without the shopper's consent (tracking.consent), nor, when a server names a user
    without a request, for a user who said no on their account. Tracking must never break the shop: a failure is
    logged and None is returned.
    """
    try:
        if request is not None:
            if not may_track(request):
                return None
            fields.setdefault("user_id", get_user_id(request))
            fields.setdefault("visitor_id", get_visitor_id(request))
        elif fields.get("user_id") and opted_out_users([str(fields["user_id"])]):
            return None
        event = build_event(event_type, **fields)
        attribute([event])
        _save_once(event)
        on_event_recorded(event)
        metrics.count_events("record_event", accepted=1)
        return event
    except IntegrityError:
        logger.info("duplicate event_id %s ignored", fields.get("event_id"))
        metrics.count_events("record_event", duplicated=1)
        return None
    except Exception:
        logger.exception("could not record %s event", event_type)
        metrics.count_events("record_event", refused=1, reason="error")
        return None


def _save_once(event: Event) -> None:
    """Insert `event`; if PostgreSQL dropped the session under it (a restart, `pg_terminate_backend`), once more on a
    new connection, so a blip loses no event. Its event_id makes that exact: had the first insert committed after
    all, the second is an IntegrityError, a duplicate. Inside the caller's own transaction the error stands (its
    earlier work went with the session)."""
    for attempt in (1, 2):
        connection.ensure_connection()
        session = connection.connection
        try:
            with transaction.atomic():
                event.save(force_insert=True)
            return
        except (OperationalError, InterfaceError):
            # The session is gone (not merely the statement refused) when the driver says so, or when Django, failing
            # to roll it back, dropped it and opened another as the transaction ended.
            gone = connection.connection is not session or bool(getattr(session, "closed", False))
            if attempt == 2 or connection.in_atomic_block or not gone:
                raise
            logger.warning("the database dropped the connection while recording an event; trying once more")
            if connection.connection is session:
                connection.close()  # the next statement opens a new one


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
    "variant",
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
                        e.variant,
                        json.dumps(e.context, cls=DjangoJSONEncoder),
                    )
                )
            cursor.execute(sql, params)
            stored.update(r[0] for r in cursor.fetchall())
    return stored


def insert_events(events: Iterable[Event]) -> list[Event]:
    """Insert events, skipping ids already stored or repeated in the batch, and those of users who refused
    tracking on their account; returns the events actually stored.

    On PostgreSQL the answer is exact even when another request races this one with the same ids. Elsewhere
    (SQLite for the demo) it is one read of existing ids and a bulk insert that ignores conflicts, exact unless a
    concurrent writer stores the same id in between.
    """
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    refused = opted_out_users(e.user_id for e in unique.values() if e.user_id)
    if refused:  # a user who said no on their account: whoever sends their events, none is kept
        unique = {eid: e for eid, e in unique.items() if e.user_id not in refused}
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
    training = {t for t, w in rec_settings.EVENT_WEIGHTS.items() if w > 0}
    signals.events_stored.send(
        sender=Event,
        shoppers=list(dict.fromkeys(e.shopper for e in events if e.event_type != "impression")),
        tasted=list(dict.fromkeys(e.shopper for e in events if e.event_type in training and e.product_id)),
    )
