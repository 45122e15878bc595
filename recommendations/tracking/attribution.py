"""Which block an event owes to: clicks and conversions stamped with their impression's experiment arm, and
conversions attributed to the click that led to them, at write time so reports count one indexed column."""

from __future__ import annotations

from datetime import datetime

from recommendations.conf import rec_settings
from recommendations.models import Event

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
