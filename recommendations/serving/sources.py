"""Where a block's candidates come from: one source per placement (for_you re-ranked by this session), the
strategies staff or an experiment arm put instead, the fallback steps, and which shared list each of them shows."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from recommendations import keys, tunables
from recommendations.conf import rec_settings
from recommendations.engine import reasons as reason_codes
from recommendations.experiments import assignment
from recommendations.lists import store
from recommendations.lists.store import shared_items, stored_items, stored_lists
from recommendations.serving.block import Block, Request
from recommendations.serving.profiles import _profiles
from recommendations.serving.shopper import ShopperState
from recommendations.tunables import Candidate, Placement

logger = logging.getLogger(__name__)

SESSION_ANCHORS = 10  # the newest distinct products of the session that steer for_you


# -- the shared lists a page shows once ------------------------------------------------------------------------------


def _shared_source(step_or_source: str, reason: str = "", category: str = "", product_id: str = "") -> str:
    """The shared list an item (its source and reason) or a fallback step draws from, or "" for anything personal.

    One page shows each shared list under one title only: a new visitor's "Recommended for you" filled with trending
    products right above "Trending now" told them the same thing twice, under two names.
    """
    if step_or_source in ("trending", "popular", "similar", "newest"):  # an item: its reason names the list
        return reason or step_or_source
    if step_or_source == "trending_category":
        return f"{reason_codes.TRENDING_}{category}" if category else ""
    return ""


def _step_source(step: str, category: str, product_id: str) -> str:
    """The shared list a fallback step reads (the key `_shared_source` gives its items)."""
    if step == "similar":
        return f"{reason_codes.SIMILAR_}{product_id}" if product_id else ""
    return _shared_source(step, step if step in ("trending", "popular") else "", category, product_id)


def _note_sources(block: Block) -> None:
    """Remember, for the blocks below on this page, which title showed which shared list."""
    memo = store.current_pass.get()
    if memo is None:
        return
    for item in block.items:
        key = _shared_source(item.source, item.reason)
        if key:
            memo.source_titles.setdefault(key, block.title)


# -- the placement's candidates, strategies and fallback steps -------------------------------------------------------


def _candidates(
    req: Request, state: ShopperState, config: Placement, arm: assignment.Arm | None
) -> tuple[list[Candidate], str]:
    """The placement's own candidates, or what its strategy (or the shopper's experiment arm) says instead."""
    strategy = arm.strategy if arm is not None else config.strategy
    if strategy in STRATEGY_SOURCES:
        return STRATEGY_SOURCES[strategy](req), strategy
    if strategy == "model_version" and arm is not None and arm.training_run_id and config.name == "for_you":
        # Lists a precompute wrote for the arm's model; until one has, the serving model's (and say so).
        rows = stored_items(keys.arm_list("for_you", arm.training_run_id), req.shopper) if req.shopper else []
        if rows:
            return _as_candidates(rows, "stored"), f"run #{arm.training_run_id}"
    source = SOURCES.get(config.name)
    return (source(req, state) if source is not None else []), "serving model"


def _strategy_newest(req: Request) -> list[Candidate]:
    rows = tunables.rule_candidates(
        {"id": "newest", "source": "newest", "source_value": "", "source_days": None, "updated_at": "", "products": []},
        req.category,
        50,
    )
    return [(pid, score, reason_codes.NEW, "newest") for pid, score, _, _ in rows]


STRATEGY_SOURCES: dict[str, Callable[[Request], list[Candidate]]] = {
    "trending": lambda req: _fallback_candidates("trending", 50, "", ""),
    "popular": lambda req: _fallback_candidates("popular", 50, "", ""),
    "newest": _strategy_newest,
}


def _fallback_candidates(step: str, limit: int, category: str, product_id: str = "") -> list[Candidate]:
    if step == "similar":
        rows = stored_items("similar", product_id) if product_id else []
        return [(str(r[0]), float(r[1]), f"{reason_codes.SIMILAR_}{product_id}", "similar") for r in rows]
    if step == "trending_category":
        if not category:
            return []
        rows = shared_items("trending", f"category:{category}") or store.popular_items(limit, category)
        return [(str(r[0]), float(r[1]), f"{reason_codes.TRENDING_}{category}", "trending") for r in rows]
    if step == "trending":
        return [(str(r[0]), float(r[1]), "trending", "trending") for r in shared_items("trending")]
    if step == "popular":
        return [(str(r[0]), float(r[1]), "popular", "popular") for r in store.popular_items(limit)]
    logger.warning("unknown fallback step %r ignored", step)
    return []


# -- candidate sources, one per placement ----------------------------------------------------------------------------


def _as_candidates(rows: list[list[Any]], source: str, reason: str | None = None) -> list[Candidate]:
    return [(str(r[0]), float(r[1]), reason or (str(r[2]) if len(r) > 2 else ""), source) for r in rows]


def _for_you(req: Request, state: ShopperState) -> list[Candidate]:
    """The stored list, re-ranked toward what this session looked at: a view a second ago counts on the next page."""
    anchors = _session_anchors(state)
    if req.shopper and anchors:  # the stored list and the anchors' similar lists in one query
        store.read_lists([("for_you", req.shopper), *(("similar", anchor) for anchor in anchors)])
    stored = _as_candidates(stored_items("for_you", req.shopper), "stored") if req.shopper else []
    session = _session_scores(state)
    if not session:
        return stored
    weight = float(rec_settings.SESSION_WEIGHT)
    n = max(len(stored), 1)
    scores = {pid: (1 - weight) * (1 - rank / n) for rank, (pid, *_) in enumerate(stored)}
    why = {pid: (reason, source) for pid, _, reason, source in stored}
    for pid, (score, anchor) in session.items():
        from_stored = scores.get(pid, 0.0)
        scores[pid] = from_stored + weight * score
        if weight * score > from_stored or pid not in why:  # the session contributed most: it is the reason
            why[pid] = (f"{reason_codes.SESSION_}{anchor}", "session")
    # Best first, ties by id: a stable sort by id, then by score (reverse keeps ties in order); no tuple per key.
    ranked = sorted(sorted(scores), key=scores.__getitem__, reverse=True)
    return [(pid, round(scores[pid], 6), *why[pid]) for pid in ranked]


def _session_anchors(state: ShopperState) -> list[str]:
    """The session's newest distinct products, newest first."""
    anchors: list[str] = []
    for product_id, _, _ in state.session:
        if product_id not in anchors:
            anchors.append(product_id)
        if len(anchors) >= SESSION_ANCHORS:
            break
    return anchors


def _session_scores(state: ShopperState) -> dict[str, tuple[float, str]]:
    """Products near the session's newest products: their similar lists, then trending in their categories."""
    anchors = _session_anchors(state)
    if not anchors:
        return {}
    neighbours = stored_lists("similar", anchors)
    categories = _profiles(anchors)
    store.prefetch_shared("trending", [f"category:{p.category}" for p in categories.values() if p.category])
    excluded = set(anchors)
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}  # the largest single contribution and its anchor: the reason
    for position, anchor in enumerate(anchors):
        recency = 0.7**position
        rows = neighbours.get(anchor, [])
        top = max((float(r[1]) for r in rows), default=0.0)
        contributions = [(str(r[0]), recency * float(r[1]) / top) for r in rows] if top > 0 else []
        profile = categories.get(anchor)
        category = profile.category if profile is not None else ""
        if category:
            trending = shared_items("trending", f"category:{category}")
            n = max(len(trending), 1)
            contributions += [(str(r[0]), 0.5 * recency * (1 - rank / n)) for rank, r in enumerate(trending)]
        for pid, contribution in contributions:  # a hot loop on a live session's page: kept flat
            if contribution <= 0 or pid in excluded:
                continue
            scores[pid] = scores.get(pid, 0.0) + contribution
            held = best.get(pid)
            if held is None or contribution > held[0]:
                best[pid] = (contribution, anchor)
    top = max(scores.values(), default=0.0)
    if top <= 0:
        return {}
    return {pid: (score / top, best[pid][1]) for pid, score in scores.items()}


def _similar(req: Request, state: ShopperState) -> list[Candidate]:
    return _as_candidates(stored_items("similar", req.product_id), "stored") if req.product_id else []


def _bought_together(req: Request, state: ShopperState) -> list[Candidate]:
    """With a product: its co-purchases. Without (the cart page): the cart's co-purchases, summed."""
    anchors = [req.product_id] if req.product_id else sorted(req.cart if req.cart is not None else state.cart)
    lists = stored_lists("bought_together", anchors)
    scores: dict[str, float] = defaultdict(float)
    reasons: dict[str, tuple[float, str]] = {}
    for anchor in anchors:
        for r in lists.get(anchor, []):
            pid, score = str(r[0]), float(r[1])
            scores[pid] += score
            if pid not in reasons or score > reasons[pid][0]:
                reasons[pid] = (score, f"{reason_codes.TOGETHER_}{anchor}")
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(pid, round(score, 6), reasons[pid][1], "stored") for pid, score in ranked]


def _trending(req: Request, state: ShopperState) -> list[Candidate]:
    if req.category:
        return _as_candidates(
            shared_items("trending", f"category:{req.category}"), "trending", f"{reason_codes.TRENDING_}{req.category}"
        )
    return _as_candidates(shared_items("trending"), "trending")


def _recently_viewed(req: Request, state: ShopperState) -> list[Candidate]:
    n = len(state.viewed)
    return [
        (pid, round(1 - rank / max(n, 1), 6), reason_codes.VIEWED, "history")
        for rank, (pid, _) in enumerate(state.viewed)
    ]


def _buy_again(req: Request, state: ShopperState) -> list[Candidate]:
    """The shopper's own purchases of products people re-buy, the ones due again first."""
    if not state.bought:
        return []
    rates = {str(r[0]): (float(r[1]), float(r[3]) if len(r) > 3 and r[3] else 0.0) for r in shared_items("buy_again")}
    now = timezone.now()
    scored = []
    for pid, times in state.bought.items():
        rate, interval = rates.get(pid, (0.0, 0.0))
        if not rate and len(times) < 2:
            continue  # a one-off purchase of a product nobody re-buys
        rate = rate or 0.5  # this shopper re-bought it, whatever the shop does
        days = (now - times[0]).total_seconds() / 86_400
        due = min(days / interval, 2.0) if interval > 0 else 1.0
        scored.append((pid, round(rate * (0.5 + due), 6), reason_codes.REPEAT, "history"))
    return sorted(scored, key=lambda c: (-c[1], c[0]))


SOURCES: dict[str, Callable[[Request, ShopperState], list[Candidate]]] = {
    "for_you": _for_you,
    "similar": _similar,
    "bought_together": _bought_together,
    "trending": _trending,
    "recently_viewed": _recently_viewed,
    "buy_again": _buy_again,
}
