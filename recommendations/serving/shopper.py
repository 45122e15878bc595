"""What serving knows of a shopper: their state from their newest events (session, cart, recently viewed, bought),
read once per page, and the version stamp that retires their cached blocks when they do something."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.cache import cache
from django.utils import timezone

from recommendations import keys, serving_sql
from recommendations.conf import rec_settings
from recommendations.lists import store
from recommendations.models import Event

logger = logging.getLogger(__name__)

SHOPPER_VERSION_TTL = 24 * 3600
RECENT_EVENTS = 200  # the newest events of a shopper that serving reads (session, cart, recently viewed)


@dataclass
class ShopperState:
    """What serving knows of a shopper from their newest events: one query, read once per block."""

    session: list[tuple[str, str, datetime]] = field(default_factory=list)  # (product, type, when), newest first
    cart: set[str] = field(default_factory=set)
    viewed: list[tuple[str, datetime]] = field(default_factory=list)  # distinct, newest first
    bought: dict[str, list[datetime]] = field(default_factory=dict)  # product -> purchase times, newest first
    n_events: int = 0  # events read (at most RECENT_EVENTS): what "shoppers with fewer than N events" rules ask


def shopper_state(shopper: str) -> ShopperState:
    """The shopper's state, read once per render pass: every block of a page asks for it."""
    memo = store.current_pass.get()
    if memo is not None and shopper in memo.states:
        return memo.states[shopper]
    state = _read_shopper_state(shopper)
    if memo is not None:
        memo.states[shopper] = state
    return state


def _read_shopper_state(shopper: str) -> ShopperState:
    if not shopper:
        return ShopperState()
    connection = serving_sql.usable(Event)
    if connection is not None:
        rows = serving_sql.newest_events(connection, shopper, RECENT_EVENTS)
    else:
        rows = list(
            Event.objects.filter(shopper=shopper)
            .exclude(product_id="")
            .exclude(event_type__in=("impression", "search"))
            .order_by("-occurred_at", "-pk")
            .values_list("product_id", "event_type", "occurred_at")[:RECENT_EVENTS]
        )
    return _state_from(shopper, rows)


def _state_from(shopper: str, rows: list[tuple[str, str, datetime]]) -> ShopperState:
    """A shopper's state from their newest events, newest first (their purchases are read apart if cut off)."""
    state = ShopperState()
    state.n_events = len(rows)
    now = timezone.now()
    session_start = now - timedelta(minutes=float(rec_settings.SESSION_MINUTES))
    cart_start = now - timedelta(days=float(rec_settings.CART_DAYS))
    weights = rec_settings.EVENT_WEIGHTS
    settled: set[str] = set()  # newest first: a removal or purchase settles every older add of that product
    seen_views: set[str] = set()
    for product_id, event_type, occurred_at in rows:
        if event_type in ("remove_from_cart", "purchase"):
            settled.add(product_id)
        elif event_type == "add_to_cart" and product_id not in settled and occurred_at >= cart_start:
            state.cart.add(product_id)
        if event_type == "view" and product_id not in seen_views:
            seen_views.add(product_id)
            state.viewed.append((product_id, occurred_at))
        if occurred_at >= session_start and weights.get(event_type, 0) > 0:
            state.session.append((product_id, event_type, occurred_at))
    if len(rows) < RECENT_EVENTS:
        # Fewer rows than the limit: that was every event of theirs, so every purchase too; no second query.
        purchases = [(product_id, at) for product_id, event_type, at in rows if event_type == "purchase"]
    elif (connection := serving_sql.usable(Event)) is not None:
        purchases = serving_sql.purchases(connection, shopper, RECENT_EVENTS)
    else:
        purchases = list(
            Event.objects.filter(shopper=shopper, event_type="purchase")
            .exclude(product_id="")
            .order_by("-occurred_at")
            .values_list("product_id", "occurred_at")[:RECENT_EVENTS]
        )
    for product_id, occurred_at in purchases:
        state.bought.setdefault(product_id, []).append(occurred_at)
    return state


def bought_by(shopper: str, limit: int = 200) -> set[str]:
    """Products the shopper bought lately; lists leave them out unless the placement allows re-buying."""
    if not shopper:
        return set()
    return set(
        Event.objects.filter(shopper=shopper, event_type="purchase")
        .order_by("-occurred_at")
        .values_list("product_id", flat=True)[:limit]
    )


def shopper_version(shopper: str) -> str:
    """The stamp a cached block of the shopper must carry (`touch_shoppers` moves it), read once per pass."""
    if not shopper:
        return "0"
    memo = store.current_pass.get()
    if memo is not None and shopper in memo.versions:
        return memo.versions[shopper]
    version = str(cache.get(keys.shopper_version(shopper)) or "0")
    if memo is not None:
        memo.versions[shopper] = version
    return version


def touch_shoppers(shoppers: Iterable[str]) -> None:
    """A shopper did something: their cached blocks are stale (the key carries this version)."""
    stamp = time.time_ns()
    stamps = {keys.shopper_version(s): stamp for s in set(shoppers) if s}
    if stamps:
        try:
            cache.set_many(stamps, SHOPPER_VERSION_TTL)
        except Exception:
            logger.exception("could not mark %d shoppers' cached blocks stale", len(stamps))
