"""`recommend`: one block, from the request through candidates, picker and fallback to reasons, within its time
budget; it never raises (an error is logged and answered by the fallback) and caches what it built."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from recommendations import keys, metrics, serving_sql
from recommendations.conf import rec_settings
from recommendations.experiments import assignment
from recommendations.lists import store
from recommendations.lists.store import active_set_id, render_pass
from recommendations.models import Event
from recommendations.serving.block import Block, Recommendation, Request
from recommendations.serving.cache import _cache_block, _cached_block
from recommendations.serving.picker import _explore, _Picker, _pin
from recommendations.serving.profiles import _profiles
from recommendations.serving.reasons import _anchors, _name_reasons
from recommendations.serving.shopper import RECENT_EVENTS, ShopperState, _state_from, shopper_state
from recommendations.serving.sources import (
    STRATEGY_SOURCES,
    _candidates,
    _fallback_candidates,
    _note_sources,
    _step_source,
)
from recommendations.tunables import Placement, UnknownPlacement, placement_config, rules, snapshot

logger = logging.getLogger(__name__)


def recommend(
    placement: str,
    *,
    shopper: str = "",
    product_id: str = "",
    category: str = "",
    exclude: Iterable[str] = (),
    cart: Iterable[str] | None = None,
    limit: int | None = None,
    campaign: str = "",
    preview: bool = False,
    experiment: str = "",
) -> Block:
    """A block for `placement`; raises UnknownPlacement for a name not configured, never anything else.

    `preview` builds afresh (no cached block is read or written) for the admin's "what does this shopper see".
    `experiment` names another placement whose running experiment splits the shoppers first (an e-mail flow's
    email:<slug>, whose blocks fill from this placement); without one running there, this placement's own applies.
    """
    if placement not in rec_settings.PLACEMENTS:
        raise UnknownPlacement(placement)
    page = store.current_pass.get()  # the page's blocks so far, when the tag renders this one
    req = Request(
        placement=placement,
        shopper=shopper or "",
        product_id=str(product_id or ""),
        category=str(category or ""),
        exclude=frozenset(str(p) for p in exclude),
        cart=None if cart is None else frozenset(str(p) for p in cart),
        limit=limit,
        campaign=campaign or "",
        taken=frozenset(page.source_titles.items()) if page is not None else frozenset(),
    )
    block = Block(placement)
    config: Placement | None = None
    started, outcome = time.perf_counter(), "built"
    try:
        with render_pass():
            cache_key, stamp, cached = _cached_block(req, preview=preview)
            if cached is not None and not preview:
                block.source, block.title = cached["source"], cached["title"]
                block.variant, block.model = cached.get("variant", ""), cached.get("model", "")
                block.items = [Recommendation(*row) for row in cached["items"]]
                _note_sources(block)
                metrics.observe_block(placement, "cached", block.source, started)
                return block
            tunables = snapshot.bundle(stamp[2])
            config = placement_config(placement, tunables)
            block.title = config.title
            if config.enabled and _build(block, req, config, _size(req, config), tunables, experiment):
                outcome = "degraded"
            if preview:
                return block
            _cache_block(
                cache_key,
                {
                    "stamp": stamp,
                    "source": block.source,
                    "title": block.title,
                    "variant": block.variant,
                    "model": block.model,
                    "items": [
                        (i.product_id, i.score, i.reason, None, i.reason_text, i.source, i.rules) for i in block.items
                    ],
                },
            )
    except Exception:
        logger.exception(
            "%s failed for product %r, shopper %r; serving fallback", placement, req.product_id, req.shopper
        )
        block.source, outcome = "fallback", "fallback"
        try:
            config = config or placement_config(placement)
        except Exception:
            config = None
        block.title = block.title or (config.title if config else "")
        block.items = _safe_fallback(config, _size(req, config), req) if config else []
    _note_sources(block)
    if not preview:
        metrics.observe_block(placement, outcome, block.source, started)
    return block


def _size(req: Request, config: Placement | None) -> int:
    default = config.size if config is not None else rec_settings.BLOCK_SIZE
    return max(1, min(int(req.limit or default), 50))


def _build(
    block: Block, req: Request, config: Placement, size: int, tunables: snapshot.Bundle, experiment: str = ""
) -> bool:
    """Fill `block`; True when it ran over its time budget and was filled from the shared lists (degraded)."""
    deadline = time.monotonic() + float(rec_settings.SERVING_BUDGET_MS) / 1000
    variants = (tunables.experiments.get(experiment) if experiment else None) or tunables.experiments.get(config.name)
    arm = assignment.arm_for(variants, req.shopper)
    block.variant = arm.stamp if arm is not None else ""
    _read_ahead(req, config, arm)
    state = shopper_state(req.shopper) if req.shopper else ShopperState()
    # The product's category is looked up only if a step needs it: most blocks fill before.
    context_category: str | None = req.category if req.category or not req.product_id else None

    def page_category() -> str:
        nonlocal context_category
        if context_category is None:
            profile = _profiles([req.product_id]).get(req.product_id)
            context_category = profile.category if profile else ""
        return context_category

    candidates, block.model = _candidates(req, state, config, arm)
    degraded = False
    if time.monotonic() > deadline:
        logger.warning(
            "%s over its %s ms budget after candidates; filling from shared lists",
            config.name,
            rec_settings.SERVING_BUDGET_MS,
        )
        candidates, degraded = [], True
    merchandising = rules.merchandising_in(tunables.merchandising, config.name)
    pins: dict[int, str] = {}
    notes: dict[str, list[str]] = {}
    if merchandising:  # even without candidates: a product pin holds in a block the fallback fills
        profiles = _profiles([c[0] for c in candidates[: max(size * 8, 64)]])
        candidates, pins, notes = rules.apply_merchandising(candidates, merchandising, profiles)
    blocked = set(req.exclude)
    if req.product_id:
        blocked.add(req.product_id)
    blocked |= req.cart if req.cart is not None else state.cart
    if not config.allow_bought:
        blocked |= set(state.bought)
    picker = _Picker(size, blocked, config, category_cap=0 if req.category else config.max_per_category)
    picker.excluding = merchandising
    picker.offer(candidates)
    block.source = "stored" if picker.chosen else "fallback"
    taken = dict(req.taken)
    for step in config.fallback:
        if picker.full:
            break
        if step == "rules":
            audience = rules.Audience(
                shopper=req.shopper,
                n_events=state.n_events,
                n_purchases=len(state.bought),
                category=page_category() if _needs_category(tunables.cold_start) else "",
                campaign=req.campaign,
            )
            rule = rules.matching_rule_in(tunables.cold_start, config.name, audience)
            if rule is not None:
                picker.offer(rules.rule_candidates(rule, page_category(), size + len(blocked)))
            continue
        category = page_category() if step == "trending_category" else ""
        if taken.get(_step_source(step, category, req.product_id), block.title) != block.title:
            continue  # a block higher on the page showed this list under its own title
        picker.offer(_fallback_candidates(step, size + len(blocked), category, req.product_id))
    picker.relax()
    items = picker.chosen
    if pins:
        items = _pin(items, pins, picker, size)
    if config.exploration_share > 0:
        items = _explore(items, config, req, picker, size)
    for item in items:
        item.rules = notes.get(item.product_id, [])
    block.items = items[:size]
    if len(block.items) < min(config.min_size, size):
        block.items = []  # too few to stand under the title (one "frequently bought together" product): no block
    _name_reasons(block.items)
    return degraded


def _read_ahead(req: Request, config: Placement, arm: assignment.Arm | None) -> None:
    """On PostgreSQL, read the shopper's newest events and the stored lists the block starts from in one statement.

    A built block reads both first, one after the other; together they cost one round trip. The lists are the
    shopper's for_you (and their experiment arm's), or for a product both of its lists, which a product page shows
    together. Anything else, and the other databases, is read where it is needed.
    """
    memo = store.current_pass.get()
    connection = serving_sql.usable(Event)
    if memo is None or connection is None or not req.shopper or req.shopper in memo.states:
        return
    set_id = active_set_id()
    if set_id is None:
        return
    strategy = arm.strategy if arm is not None else config.strategy
    placements: list[str] = []
    subjects: list[str] = []
    if config.name == "for_you" and strategy not in STRATEGY_SOURCES:
        placements.append("for_you")
        if strategy == "model_version" and arm is not None and arm.training_run_id:
            placements.append(keys.arm_list("for_you", arm.training_run_id))
        subjects.append(req.shopper)
    if req.product_id:
        placements += ["similar", "bought_together"]
        subjects.append(req.product_id)
    in_hold, pairs = store.from_hold(set_id, [(p, s) for p in placements for s in subjects if (p, s) not in memo.lists])
    memo.lists.update(in_hold)
    if not pairs:
        return
    events, lists = serving_sql.events_and_lists(
        connection,
        req.shopper,
        RECENT_EVENTS,
        set_id,
        list(dict.fromkeys(placement for placement, _ in pairs)),
        list(dict.fromkeys(subject for _, subject in pairs)),
    )
    memo.states[req.shopper] = _state_from(req.shopper, events)
    store.hold_lists(set_id, pairs, lists)
    found = {(placement, subject): items for placement, subject, items in lists}
    for pair in pairs:
        memo.lists[pair] = found.get(pair) or []


def read_ahead_many(placement: str, shoppers: Iterable[str], *, limit: int | None = None) -> None:
    """Read what many shoppers' blocks of `placement` start from, for all of them at once, into the open render pass:
    their newest events (one statement on PostgreSQL), their for_you lists and the profiles of each list's first
    window of candidates and of the products its reasons name (one query each, less what the process holds).

    A sender composing a batch of e-mails builds one block per shopper; read one by one, each block paid three round
    trips before any work. `recommend` then finds it all in the pass. Outside a pass it reads nothing (nowhere to keep
    it); an unknown placement reads nothing either (`recommend` says so).
    """
    memo = store.current_pass.get()
    shoppers = [s for s in dict.fromkeys(shoppers) if s]
    if memo is None or not shoppers or placement not in rec_settings.PLACEMENTS:
        return
    config = placement_config(placement)
    _cached_block(Request(placement=placement), preview=True)  # the set, rules and profiles versions: the hold
    connection = serving_sql.usable(Event)
    unread = [s for s in shoppers if s not in memo.states]
    if connection is not None and unread:
        events = serving_sql.newest_events_many(connection, unread, RECENT_EVENTS)
        for shopper in unread:
            memo.states[shopper] = _state_from(shopper, events.get(shopper, []))
    if config.name != "for_you" or active_set_id() is None:
        return
    store.read_lists(("for_you", shopper) for shopper in shoppers)
    size = _size(Request(placement=placement, limit=limit), config)
    window = max(size * 4, 32) + size  # the picker's first window, and some for what the shopper's filters drop
    first = [row for shopper in shoppers for row in memo.lists.get(("for_you", shopper), [])[:window]]
    _profiles([str(row[0]) for row in first], also=_anchors(str(row[2]) for row in first if len(row) > 2))


def _needs_category(cold_start: list[dict[str, Any]]) -> bool:
    return any(r["audience"] == "category" for r in cold_start)


def _safe_fallback(config: Placement, size: int, req: Request) -> list[Recommendation]:
    if not config.fallback:
        return []
    try:
        blocked = set(req.exclude) | ({req.product_id} if req.product_id else set())
        chosen = []
        for pid, score, reason in store.popular_items(size + len(blocked)):
            if len(chosen) >= size:
                break
            if pid not in blocked:
                chosen.append(Recommendation(product_id=str(pid), score=float(score), reason=reason, source="popular"))
        _name_reasons(chosen)
        return chosen
    except Exception:
        logger.exception("fallback failed too; rendering nothing")
        return []


# -- the old entry points ------------------------------------------------------------------------------------------


def recommend_for_shopper(shopper: str, limit: int, exclude: Iterable[str] = ()) -> Block:
    """The for_you block: kept for hosts that called it before placements existed."""
    return recommend("for_you", shopper=shopper, limit=limit, exclude=exclude)


def similar_products(product_id: str, limit: int) -> Block:
    """The similar block of a product: kept for hosts that called it before placements existed."""
    return recommend("similar", product_id=str(product_id), limit=limit)


def trending(limit: int, category: str | None = None, exclude: Iterable[str] = ()) -> Block:
    """The trending block: kept for hosts that called it before placements existed."""
    return recommend("trending", category=category or "", limit=limit, exclude=exclude)
