"""Answers "what should this shopper see in this placement", from the precomputed lists.

Reads only: the active RecommendationSet's stored list for the subject, then filters (active, in stock,
not the current product), then fills from trending and popular so a block is never short while the
catalog has products. Any error is logged and answered by the fallback; serving never raises.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db.models import Q

from recommendations import catalog
from recommendations.models import Event, ProductProfile, RecommendationSet, StoredList

logger = logging.getLogger(__name__)

ACTIVE_SET_CACHE_KEY = "recommendations:active_set"
ACTIVE_SET_TTL = 30  # seconds; precompute clears it on switch, the TTL only covers other processes' caches


@dataclass
class Recommendation:
    product_id: str
    score: float
    reason: str = ""
    product: Any = None
    reason_text: str = ""


@dataclass
class Block:
    placement: str
    items: list[Recommendation] = field(default_factory=list)
    recommendation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source: str = "stored"


def active_set_id() -> int | None:
    cached = cache.get(ACTIVE_SET_CACHE_KEY)
    if cached is not None:
        return cached or None
    row = (
        RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE)
        .order_by("-activated_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    cache.set(ACTIVE_SET_CACHE_KEY, row or 0, ACTIVE_SET_TTL)
    return row


def forget_active_set() -> None:
    cache.delete(ACTIVE_SET_CACHE_KEY)


def stored_items(placement: str, subject: str = "") -> list[list[Any]]:
    """The raw [[product_id, score, reason], ...] list stored for a subject, or [] if none."""
    set_id = active_set_id()
    if set_id is None:
        return []
    items = (
        StoredList.objects.filter(recommendation_set_id=set_id, placement=placement, subject=subject)
        .values_list("items", flat=True)
        .first()
    )
    return items or []


def _servable(product_ids: Iterable[str]) -> set[str]:
    """Which ids may be shown: active and in stock in the engine's view of the catalog."""
    ids = list(dict.fromkeys(product_ids))
    if not ids:
        return set()
    return set(
        ProductProfile.objects.filter(product_id__in=ids, active=True, in_stock=True).values_list(
            "product_id", flat=True
        )
    )


def _popular_items(
    limit: int, category: str | None = None, exclude: set[str] | frozenset = frozenset()
) -> list[list[Any]]:
    """Last resort when nothing is precomputed yet: best sellers, then newest."""
    qs = ProductProfile.objects.filter(active=True, in_stock=True)
    if category:
        qs = qs.filter(category=category)
    if exclude:
        qs = qs.filter(~Q(product_id__in=list(exclude)))
    rows = qs.order_by("-sales_count", "-created_at", "product_id").values_list("product_id", "sales_count")[:limit]
    return [[pid, float(sales), "popular"] for pid, sales in rows]


def _take(candidates: list[list[Any]], chosen: list[Recommendation], seen: set[str], limit: int) -> None:
    servable = _servable(str(c[0]) for c in candidates if str(c[0]) not in seen)
    for pid, score, *rest in candidates:
        pid = str(pid)
        if len(chosen) >= limit:
            return
        if pid in seen or pid not in servable:
            continue
        seen.add(pid)
        chosen.append(Recommendation(product_id=pid, score=float(score), reason=rest[0] if rest else ""))


def _fill(chosen: list[Recommendation], seen: set[str], limit: int, category: str | None = None) -> str:
    """Top a short list up from trending (in the category first) and then popular."""
    source = ""
    for candidates in (
        (stored_items("trending", f"category:{category}") if category else []),
        stored_items("trending"),
        _popular_items(limit + len(seen), category),
        _popular_items(limit + len(seen)),
    ):
        if len(chosen) >= limit:
            break
        before = len(chosen)
        _take(candidates, chosen, seen, limit)
        if len(chosen) > before and not source:
            source = "fallback"
    return source


def bought_by(shopper: str, limit: int = 200) -> set[str]:
    """Products the shopper bought lately; the stored list leaves them out, so the top-up must too."""
    if not shopper:
        return set()
    return set(
        Event.objects.filter(shopper=shopper, event_type="purchase")
        .order_by("-occurred_at")
        .values_list("product_id", flat=True)[:limit]
    )


def recommend_for_shopper(shopper: str, limit: int, exclude: Iterable[str] = ()) -> Block:
    """The for_you block: the shopper's precomputed list, or trending for a shopper with no history."""
    block = Block("for_you")
    seen = {str(p) for p in exclude}
    try:
        seen |= bought_by(shopper)
        stored = stored_items("for_you", shopper) if shopper else []
        _take(stored, block.items, seen, limit)
        block.source = "stored" if block.items else "fallback"
        _fill(block.items, seen, limit)
    except Exception:
        logger.exception("for_you failed for %s; serving fallback", shopper)
        block.source = "fallback"
        block.items = _safe_fallback(limit, seen)
    return block


def similar_products(product_id: str, limit: int) -> Block:
    """The similar block for a product page: co-occurrence neighbours, then its category's trending."""
    block = Block("similar")
    seen = {str(product_id)}
    try:
        _take(stored_items("similar", str(product_id)), block.items, seen, limit)
        block.source = "stored" if block.items else "fallback"
        category = ProductProfile.objects.filter(product_id=str(product_id)).values_list("category", flat=True).first()
        _fill(block.items, seen, limit, category=category or None)
    except Exception:
        logger.exception("similar failed for product %s; serving fallback", product_id)
        block.source = "fallback"
        block.items = _safe_fallback(limit, seen)
    return block


def trending(limit: int, category: str | None = None, exclude: Iterable[str] = ()) -> Block:
    """Trending products (in a category when given), leaving out `exclude` (e.g. shown higher on the page)."""
    block = Block("trending")
    seen = {str(p) for p in exclude}
    try:
        subject = f"category:{category}" if category else ""
        _take(stored_items("trending", subject), block.items, seen, limit)
        _fill(block.items, seen, limit, category=category)
    except Exception:
        logger.exception("trending failed; serving fallback")
        block.items = _safe_fallback(limit, seen)
    return block


def _safe_fallback(limit: int, seen: set[str]) -> list[Recommendation]:
    try:
        chosen: list[Recommendation] = []
        _take(_popular_items(limit + len(seen)), chosen, set(seen), limit)
        return chosen
    except Exception:
        logger.exception("fallback failed too; rendering nothing")
        return []


def attach_products(block: Block) -> Block:
    """Load the host's product objects and reason texts for rendering; drops ids the host no longer has."""
    products = catalog.get_products(item.product_id for item in block.items)
    anchors = [item.reason.split(":", 1)[1] for item in block.items if item.reason.startswith("because:")]
    names = (
        dict(ProductProfile.objects.filter(product_id__in=anchors).values_list("product_id", "name")) if anchors else {}
    )
    kept = []
    for item in block.items:
        item.product = products.get(item.product_id)
        if item.product is None:
            continue
        item.reason_text = reason_text(item.reason, names)
        kept.append(item)
    block.items = kept
    return block


def reason_text(reason: str, names: dict[str, str]) -> str:
    """A shopper-facing sentence for a stored reason code."""
    if reason.startswith("because:"):
        anchor = names.get(reason.split(":", 1)[1])
        return f"Because you looked at {anchor}" if anchor else "Based on your browsing"
    return {
        "trending": "Trending now",
        "popular": "Popular",
        "also": "Often viewed together",
        "for_you": "Picked for your taste",
    }.get(reason, "")
