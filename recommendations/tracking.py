"""Recording what shoppers do: the public `record_event` API, the visitor cookie, and the merge at login.

A host shop calls `record_event(request, "view", product_id=...)` from its views; the JS tracker and
back-end integrations go through the ingest API, which ends up in `store_events` here too.
"""

from __future__ import annotations

import json
import logging
import re
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

from recommendations import signals
from recommendations.conf import EVENT_TYPES, rec_settings
from recommendations.models import Event, shopper_key

logger = logging.getLogger(__name__)

VISITOR_ATTR = "recommendations_visitor_id"
# The visit's utm_campaign, kept for later pages so cold-start rules (rules.py) can match on it.
CAMPAIGN_COOKIE = "rec_campaign"
CAMPAIGN_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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
        request.__dict__[AFTER_RESPONSE_ATTR] = []
        response = self.get_response(request)
        _finish_on_close(request, response)
        _remember_campaign(request, response)
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


def _remember_campaign(request: HttpRequest, response: HttpResponse) -> None:
    """Keep the visit's utm_campaign in a session cookie, so cold-start rules see it on later pages too."""
    campaign = request.GET.get("utm_campaign", "")
    if campaign and CAMPAIGN_PATTERN.match(campaign) and request.COOKIES.get(CAMPAIGN_COOKIE) != campaign:
        response.set_cookie(CAMPAIGN_COOKIE, campaign, httponly=True, samesite="Lax")


IMPRESSIONS_ATTR = "_recommendations_impressions"


def queue_impression(request: HttpRequest | None, block: Any, shopper: str | None = None) -> None:
    """Note that `block` was rendered for this request; stored in one INSERT once the response has gone out.

    `shopper` ("u:<id>" / "v:<id>") names whom it was rendered for when that is not the requester (a server
    rendering a shopper's block through the API with the write key).
    """
    if request is None or not getattr(block, "items", None):
        return
    if shopper:
        kind, _, key = shopper.partition(":")
        user_id, visitor_id = (key, "") if kind == "u" else ("", key)
    else:
        user_id, visitor_id = get_user_id(request), get_visitor_id(request)
    event = build_event(
        "impression",
        user_id=user_id,
        visitor_id=visitor_id,
        placement=block.placement,
        recommendation_id=block.recommendation_id,
        variant=getattr(block, "variant", "") or "",  # the experiment arm serving stamped on the block, if any
        context={
            "items": [item.product_id for item in block.items],
            "sources": [item.source for item in block.items],
        },
    )
    pending = request.__dict__.setdefault(IMPRESSIONS_ATTR, [])
    pending.append(event)


def flush_impressions(request: HttpRequest) -> int:
    """Store the impressions queued on `request`; returns how many."""
    pending = request.__dict__.pop(IMPRESSIONS_ATTR, None)
    if not pending:
        return 0
    try:
        return len(insert_events(pending))
    except Exception:
        logger.exception("could not store %d impressions", len(pending))
        return 0


AFTER_RESPONSE_ATTR = "_recommendations_after_response"


def after_response(request: HttpRequest | None, task: Callable[[], Any]) -> bool:
    """Run `task` once the response has gone out, with the impressions; False when nothing will (the request did not
    come through VisitorMiddleware): the caller then does it at once."""
    tasks = request.__dict__.get(AFTER_RESPONSE_ATTR) if request is not None else None
    if tasks is None:
        return False
    tasks.append(task)
    return True


def finish_request(request: HttpRequest) -> None:
    """What waits for the response to go out: the tasks `after_response` took (caching the blocks the page built),
    then the impressions."""
    for task in request.__dict__.pop(AFTER_RESPONSE_ATTR, None) or []:
        try:
            task()
        except Exception:
            logger.exception("a task after the response failed")
    flush_impressions(request)


def _finish_on_close(request: HttpRequest, response: HttpResponse) -> None:
    """The WSGI/ASGI server closes a response after sending it: `finish_request` runs then, off the page's time. A
    response that is never closed (a crashed server) loses its impressions, which is the price of not waiting."""
    if not request.__dict__.get(IMPRESSIONS_ATTR) and not request.__dict__.get(AFTER_RESPONSE_ATTR):
        return
    close = response.close

    def finish_then_close() -> None:
        # Before close(): it ends the request (request_finished), which may close the database connection.
        finish_request(request)
        close()

    response.close = finish_then_close  # type: ignore[method-assign]


ATTRIBUTED_TYPES = ("add_to_cart", "purchase")


def attribute(events: list[Event]) -> int:
    """Stamp clicks with their block's experiment arm, and add-to-cart and purchase events with the block whose click
    led to them (within ATTRIBUTION_HOURS).

    A click (or a conversion sent with a recommendation id) takes the `variant` of the impression with the same
    recommendation id: the arm is decided by serving, never by a client (the ingest API reads no variant). A conversion
    without a recommendation id gets the latest click by the same shopper on the same product before it; the click's
    placement, recommendation id and variant are copied, so every report can count conversions per block and per arm
    with one indexed column. Returns how many conversions were attributed to a click.
    """
    _stamp_variants(events)
    wanted = [e for e in events if e.event_type in ATTRIBUTED_TYPES and e.product_id and not e.recommendation_id]
    if not wanted:
        return 0
    from datetime import timedelta

    window = timedelta(hours=float(rec_settings.ATTRIBUTION_HOURS))
    earliest = min(e.occurred_at for e in wanted) - window
    clicks = (
        Event.objects.filter(
            event_type="click",
            shopper__in={e.shopper for e in wanted},
            product_id__in={e.product_id for e in wanted},
            occurred_at__gte=earliest,
        )
        .exclude(recommendation_id="")
        .order_by("occurred_at")
        .values_list("shopper", "product_id", "occurred_at", "placement", "recommendation_id", "variant")
    )
    by_pair: dict[tuple[str, str], list[tuple[datetime, str, str, str]]] = {}
    for shopper, product_id, occurred_at, placement, rec_id, variant in clicks:
        by_pair.setdefault((shopper, product_id), []).append((occurred_at, placement, rec_id, variant))
    done = 0
    for event in wanted:
        best = None
        for occurred_at, placement, rec_id, variant in by_pair.get((event.shopper, event.product_id), []):
            if event.occurred_at - window <= occurred_at <= event.occurred_at:
                best = (placement, rec_id, variant)  # ascending: the last one that fits is the latest
        if best is not None:
            event.placement, event.recommendation_id, event.variant = best
            event.context = {**(event.context or {}), "attributed": "click"}
            done += 1
    return done


def _stamp_variants(events: list[Event]) -> None:
    """Clicks and conversions that name a block get the variant of its impression, when it has one: one query for
    the batch. (Clients never set a variant: the ingest API does not read one; server-side callers are trusted.)"""
    named = [e for e in events if e.recommendation_id and (e.event_type == "click" or e.event_type in ATTRIBUTED_TYPES)]
    if not named:
        return
    variants = dict(
        Event.objects.filter(event_type="impression", recommendation_id__in={e.recommendation_id for e in named})
        .exclude(variant="")
        .values_list("recommendation_id", "variant")
    )
    for event in named:
        event.variant = variants.get(event.recommendation_id, event.variant)


def record_event(request: HttpRequest | None, event_type: str, **fields: Any) -> Event | None:
    """Record one event for the shopper behind `request` (or the user_id / visitor_id given).

    Tracking must never break the shop: a failure is logged and None is returned.
    """
    try:
        if request is not None:
            fields.setdefault("user_id", get_user_id(request))
            fields.setdefault("visitor_id", get_visitor_id(request))
        event = build_event(event_type, **fields)
        attribute([event])
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
    training = {t for t, w in rec_settings.EVENT_WEIGHTS.items() if w > 0}
    signals.events_stored.send(
        sender=Event,
        shoppers=list(dict.fromkeys(e.shopper for e in events if e.event_type != "impression")),
        tasted=list(dict.fromkeys(e.shopper for e in events if e.event_type in training and e.product_id)),
    )


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
            shopper = shopper_key(str(user.pk), "")
            signals.events_stored.send(sender=Event, shoppers=[shopper], tasted=[shopper])
    except Exception:
        logger.exception("could not merge visitor events at login")
