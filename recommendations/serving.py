"""Answers "what should this shopper see in this placement", from the precomputed lists and this session.

The pipeline, the same for every placement (`recommend`):

    candidates (stored list, or the shopper's own history) → re-rank with this session's events (for_you)
    → filters (active, in stock, not the current product, not in the cart, not bought unless allowed, not shown
    higher on the page) → diversity cap per category / brand → fill from the fallback chain (trending in the
    context category → trending → popular) → a reason per item.

Serving only reads: stored lists, product profiles and the shopper's newest events. It has a time budget (past it,
the optional steps are skipped and the block is filled from the shared lists) and never raises: an error is logged
and answered by the fallback. The blocks of one page share one `RenderPass`, so what they all read (the active set,
the shopper's version and events, profiles, stored lists) is read once per page. On PostgreSQL the reads are plain SQL
(`serving_sql`: the ORM cost more than the database did); the blocks a page built are cached after its response.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy

from recommendations import arms, catalog, keys, rules, serving_sql, store
from recommendations.conf import rec_settings
from recommendations.holds import Hold
from recommendations.models import Event, ProductProfile
from recommendations.rules import (  # noqa: F401 - part of serving's public surface
    Candidate,
    Placement,
    UnknownPlacement,
    placement_config,
    placement_names,
)
from recommendations.store import (  # noqa: F401 - part of serving's public surface
    RenderPass,
    active_set_id,
    forget_active_set,
    render_pass,
    shared_items,
    stored_items,
    stored_lists,
)

logger = logging.getLogger(__name__)

SHOPPER_VERSION_TTL = 24 * 3600
PROFILE_HOLD_SECONDS = 600  # a process keeps profiles at most this long: heals a write made around catalog
PROFILE_HOLD_MAX = 50_000  # profiles a process keeps, least recently used out first (~24 MB, measured)
RECENT_EVENTS = 200  # the newest events of a shopper that serving reads (session, cart, recently viewed)
SESSION_ANCHORS = 10  # the newest distinct products of the session that steer for_you


@dataclass
class Recommendation:
    product_id: str
    score: float
    reason: str = ""
    product: Any = None
    reason_text: str = ""
    source: str = ""  # the stage that produced it: stored, session, history, trending, popular, rule:<id>, ...
    rules: list[str] = field(default_factory=list)  # merchandising rules that moved or pinned it
    # From the engine's product profile (attach_products): what the default card shows, so a host model whose
    # fields have other names still renders; a template may read `product` instead.
    name: str = ""
    price: Any = None
    brand: str = ""
    category: str = ""


@dataclass
class Block:
    placement: str
    items: list[Recommendation] = field(default_factory=list)
    recommendation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source: str = "stored"
    title: str = ""
    variant: str = ""  # the experiment arm that served it ("<experiment id>:<variant>"), stamped on its impression
    model: str = ""  # what produced the candidates: "serving model", "run #12", "trending", ...


# -- the shopper ---------------------------------------------------------------------------------------------------


@dataclass
class ShopperState:
    """What serving knows of a shopper from their newest events: one query, read once per block."""

    session: list[tuple[str, str, datetime]] = field(default_factory=list)  # (product, type, when), newest first
    cart: set[str] = field(default_factory=set)
    viewed: list[tuple[str, datetime]] = field(default_factory=list)  # distinct, newest first
    bought: dict[str, list[datetime]] = field(default_factory=dict)  # product -> purchase times, newest first
    n_events: int = 0  # events read (at most RECENT_EVENTS): what "shoppers with fewer than N events" rules ask


def shopper_state(shopper: str) -> ShopperState:
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
    if not shopper:
        return "0"
    memo = store.current_pass.get()
    if memo is not None and shopper in memo.versions:
        return memo.versions[shopper]
    version = str(cache.get(keys.cache_key("shopper", shopper)) or "0")
    if memo is not None:
        memo.versions[shopper] = version
    return version


def touch_shoppers(shoppers: Iterable[str]) -> None:
    """A shopper did something: their cached blocks are stale (the key carries this version)."""
    stamp = time.time_ns()
    stamps = {keys.cache_key("shopper", s): stamp for s in set(shoppers) if s}
    if stamps:
        try:
            cache.set_many(stamps, SHOPPER_VERSION_TTL)
        except Exception:
            logger.exception("could not mark %d shoppers' cached blocks stale", len(stamps))


# -- the request -------------------------------------------------------------------------------------------------


@dataclass
class Request:
    """Everything a block depends on; the cache key is made of exactly this."""

    placement: str
    shopper: str = ""
    product_id: str = ""
    category: str = ""
    exclude: frozenset[str] = frozenset()
    cart: frozenset[str] | None = None  # None: derived from the shopper's events
    limit: int | None = None
    campaign: str = ""
    taken: frozenset[tuple[str, str]] = frozenset()  # (shared source, title) shown higher on the page


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
) -> Block:
    """A block for `placement`; raises UnknownPlacement for a name not configured, never anything else.

    `preview` builds afresh (no cached block is read or written) for the admin's "what does this shopper see".
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
    try:
        with render_pass():
            cache_key, stamp, cached = _cached_block(req)
            if cached is not None and not preview:
                block.source, block.title = cached["source"], cached["title"]
                block.variant, block.model = cached.get("variant", ""), cached.get("model", "")
                block.items = [Recommendation(*row) for row in cached["items"]]
                _note_sources(block)
                return block
            tunables = rules.bundle(stamp[2])
            config = placement_config(placement, tunables)
            block.title = config.title
            if config.enabled:
                _build(block, req, config, _size(req, config), tunables)
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
        block.source = "fallback"
        try:
            config = config or placement_config(placement)
        except Exception:
            config = None
        block.title = block.title or (config.title if config else "")
        block.items = _safe_fallback(config, _size(req, config), req) if config else []
    _note_sources(block)
    return block


def _shared_source(step_or_source: str, reason: str = "", category: str = "", product_id: str = "") -> str:
    """The shared list an item (its source and reason) or a fallback step draws from, or "" for anything personal.

    One page shows each shared list under one title only: a new visitor's "Recommended for you" filled with trending
    products right above "Trending now" told them the same thing twice, under two names.
    """
    if step_or_source in ("trending", "popular", "similar", "newest"):  # an item: its reason names the list
        return reason or step_or_source
    if step_or_source == "trending_category":
        return f"trending:{category}" if category else ""
    return ""


def _step_source(step: str, category: str, product_id: str) -> str:
    """The shared list a fallback step reads (the key `_shared_source` gives its items)."""
    if step == "similar":
        return f"similar:{product_id}" if product_id else ""
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


def _cache_block(key: str, value: dict[str, Any]) -> None:
    memo = store.current_pass.get()
    if memo is not None and memo.pending is not None:
        memo.pending[key] = value
    else:
        cache.set(key, value, int(rec_settings.BLOCK_CACHE_SECONDS))


def cache_pending(memo: RenderPass) -> None:
    """Cache the blocks the pass built and kept back, in one round trip; a failure only costs the next page a build."""
    pending, memo.pending = memo.pending, None
    if not pending:
        return
    try:
        cache.set_many(pending, int(rec_settings.BLOCK_CACHE_SECONDS))
    except Exception:
        logger.exception("could not cache %d recommendation blocks", len(pending))


def _size(req: Request, config: Placement | None) -> int:
    default = config.size if config is not None else rec_settings.BLOCK_SIZE
    return max(1, min(int(req.limit or default), 50))


def _build(block: Block, req: Request, config: Placement, size: int, tunables: rules.Bundle) -> None:
    deadline = time.monotonic() + float(rec_settings.SERVING_BUDGET_MS) / 1000
    arm = arms.arm_for(tunables.experiments.get(config.name), req.shopper)
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
    if time.monotonic() > deadline:
        logger.warning(
            "%s over its %s ms budget after candidates; filling from shared lists",
            config.name,
            rec_settings.SERVING_BUDGET_MS,
        )
        candidates = []
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


def _read_ahead(req: Request, config: Placement, arm: arms.Arm | None) -> None:
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


def _needs_category(cold_start: list[dict[str, Any]]) -> bool:
    return any(r["audience"] == "category" for r in cold_start)


def _candidates(
    req: Request, state: ShopperState, config: Placement, arm: arms.Arm | None
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
    rows = rules.rule_candidates(
        {"id": "newest", "source": "newest", "source_value": "", "source_days": None, "updated_at": "", "products": []},
        req.category,
        50,
    )
    return [(pid, score, "new", "newest") for pid, score, _, _ in rows]


STRATEGY_SOURCES: dict[str, Callable[[Request], list[Candidate]]] = {
    "trending": lambda req: _fallback_candidates("trending", 50, "", ""),
    "popular": lambda req: _fallback_candidates("popular", 50, "", ""),
    "newest": _strategy_newest,
}


def _pin(items: list[Recommendation], pins: dict[int, str], picker: _Picker, size: int) -> list[Recommendation]:
    """Put pinned products at their 1-based positions (a pin to a product that cannot be shown is skipped)."""
    items = list(items)
    for position in sorted(pins):
        pid = pins[position]
        existing = next((i for i in items if i.product_id == pid), None)
        if existing is None:
            profile = _profiles([pid]).get(pid)
            if profile is None or not (profile.active and profile.in_stock) or pid in picker.initially_blocked:
                continue
            existing = Recommendation(product_id=pid, score=0.0, reason="featured", source="pinned")
        else:
            items.remove(existing)
        items.insert(min(position - 1, len(items)), existing)
    return items[:size]


def _explore(
    items: list[Recommendation], config: Placement, req: Request, picker: _Picker, size: int
) -> list[Recommendation]:
    """Give a share of the slots to young products with no events yet, a different few per shopper and day."""
    slots = rules.exploration_slots(size, config.exploration_share)
    if not slots:
        return items
    shown = {i.product_id for i in items}
    pool = [
        pid
        for pid in rules.exploration_pool(config.exploration_max_age_days)
        if pid not in shown and pid not in picker.initially_blocked
    ]
    picks = rules.rotate(pool, req.shopper or "anonymous", len(slots))
    items = list(items)
    for slot, pid in zip(slots, picks, strict=False):
        items.insert(
            min(slot, len(items)), Recommendation(product_id=pid, score=0.0, reason="new", source="exploration")
        )
    return items[:size]


class _Picker:
    """Filters and diversity: keeps the first servable candidates, at most N per category and per brand."""

    def __init__(self, size: int, blocked: set[str], config: Placement, category_cap: int) -> None:
        self.size = size
        self.blocked = set(blocked)
        self.config = config
        self.category_cap = category_cap  # none for a block scoped to one category: it is all one category
        self.initially_blocked = frozenset(blocked)  # the filters' verdict, for pins and exploration
        self.excluding: list[dict[str, Any]] = []  # merchandising rules; their excludes hold for fallback items too
        self.chosen: list[Recommendation] = []
        self.deferred: list[Recommendation] = []  # over a diversity cap: used only if nothing else fills the block
        self.per_category: dict[str, int] = defaultdict(int)
        self.per_brand: dict[str, int] = defaultdict(int)

    @property
    def full(self) -> bool:
        return len(self.chosen) >= self.size

    def offer(self, candidates: list[Candidate]) -> None:
        fresh = [c for c in candidates if c[0] not in self.blocked]
        if not fresh or self.full:
            return
        # Fetch profiles for a window of candidates at a time: most blocks fill from the first window.
        window = max(self.size * 4, 32)
        for start in range(0, len(fresh), window):
            part = fresh[start : start + window]
            # The products the reasons name come in the same query: _name_reasons finds them in the pass.
            profiles = _profiles([pid for pid, *_ in part], also=_anchors(reason for _, _, reason, _ in part))
            for pid, score, reason, source in part:
                if self.full:
                    return
                if pid in self.blocked:
                    continue
                profile = profiles.get(pid)
                if profile is None or not (profile.active and profile.in_stock):
                    continue
                if self.excluding and rules.excluded_by(self.excluding, profile, pid):
                    continue
                self.blocked.add(pid)
                item = Recommendation(product_id=pid, score=float(score), reason=reason, source=source)
                category, brand = profile.category, profile.brand
                cap_c, cap_b = self.category_cap, self.config.max_per_brand
                if (cap_c and category and self.per_category[category] >= cap_c) or (
                    cap_b and brand and self.per_brand[brand] >= cap_b
                ):
                    self.deferred.append(item)
                    continue
                self.per_category[category] += 1
                self.per_brand[brand] += 1
                self.chosen.append(item)

    def relax(self) -> None:
        """A short block takes the items the caps held back rather than stay short."""
        while not self.full and self.deferred:
            self.chosen.append(self.deferred.pop(0))


Profile = store.Profile  # (category, brand, active, in_stock, name, price), by name


def _profiles(product_ids: Iterable[str], also: Iterable[str] = ()) -> dict[str, Profile]:
    """Profiles of `product_ids` (those that have one), read with `also`'s in one query; a pass keeps them all."""
    ids = list(dict.fromkeys(product_ids))
    if not ids:
        return {}
    memo = store.current_pass.get()
    known = memo.profiles if memo is not None else {}
    wanted = [pid for pid in dict.fromkeys([*ids, *also]) if pid not in known]
    version = _hold_profiles_at(memo.profiles_version) if wanted and memo is not None and memo.profiles_version else 0
    if version:
        known.update(PROFILE_HOLD.get_many(wanted, generation=version))
        wanted = [pid for pid in wanted if pid not in known]
    if wanted:
        connection = serving_sql.usable(ProductProfile)
        if connection is not None:
            rows = serving_sql.profiles(connection, wanted)
        else:
            rows = ProductProfile.objects.filter(product_id__in=wanted).values_list(
                "product_id", "category", "brand", "active", "in_stock", "name", "price"
            )
        found = {row[0]: Profile._make(row[1:]) for row in rows}  # (product, category, ..., price)
        if memo is None:
            return {pid: found[pid] for pid in ids if pid in found}
        for pid in wanted:
            known[pid] = found.get(pid)
        if version:
            PROFILE_HOLD.put_many([(pid, known[pid]) for pid in wanted], generation=version)
    return {pid: profile for pid in ids if (profile := known.get(pid)) is not None}


PROFILE_HOLD: Hold[str, Profile | None] = Hold(
    "profiles", PROFILE_HOLD_MAX, owner=__name__, max_age=PROFILE_HOLD_SECONDS
)
"""The profiles this process keeps between pages (None: the product has none), as of a profiles version.

Profiles change rarely and every block reads dozens, so a process keeps what it read and a built block reads none
from the database. Its generation is `catalog`'s profiles version (`_hold_profiles_at`); past PROFILE_HOLD_MAX
profiles it forgets those used longest ago."""


def _hold_profiles_at(version: int) -> int:
    """Bring the profile hold to `version` (read with the block cache, in one round trip); the generation to read and
    write it under.

    When the version moved, it drops the products the writes since touched (one cache read:
    `catalog.profile_changes`), or everything when that cannot tell; it starts over PROFILE_HOLD_SECONDS after it
    last did. A reader that began before a catch-up reads and writes under the old version, so it finds nothing and
    cannot put back an old row.
    """
    hold = PROFILE_HOLD
    held, fresh = hold.generation, not hold.expired
    if held == version and fresh:
        return version
    changed = catalog.profile_changes(held, version) if held and fresh else None
    if changed is None:
        hold.start(version)
    else:
        hold.advance(held, version, changed)
    return version


def _fallback_candidates(step: str, limit: int, category: str, product_id: str = "") -> list[Candidate]:
    if step == "similar":
        rows = stored_items("similar", product_id) if product_id else []
        return [(str(r[0]), float(r[1]), f"similar:{product_id}", "similar") for r in rows]
    if step == "trending_category":
        if not category:
            return []
        rows = shared_items("trending", f"category:{category}") or store.popular_items(limit, category)
        return [(str(r[0]), float(r[1]), f"trending:{category}", "trending") for r in rows]
    if step == "trending":
        return [(str(r[0]), float(r[1]), "trending", "trending") for r in shared_items("trending")]
    if step == "popular":
        return [(str(r[0]), float(r[1]), "popular", "popular") for r in store.popular_items(limit)]
    logger.warning("unknown fallback step %r ignored", step)
    return []


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
            why[pid] = (f"session:{anchor}", "session")
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
                reasons[pid] = (score, f"together:{anchor}")
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(pid, round(score, 6), reasons[pid][1], "stored") for pid, score in ranked]


def _trending(req: Request, state: ShopperState) -> list[Candidate]:
    if req.category:
        return _as_candidates(
            shared_items("trending", f"category:{req.category}"), "trending", f"trending:{req.category}"
        )
    return _as_candidates(shared_items("trending"), "trending")


def _recently_viewed(req: Request, state: ShopperState) -> list[Candidate]:
    n = len(state.viewed)
    return [(pid, round(1 - rank / max(n, 1), 6), "viewed", "history") for rank, (pid, _) in enumerate(state.viewed)]


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
        scored.append((pid, round(rate * (0.5 + due), 6), "repeat", "history"))
    return sorted(scored, key=lambda c: (-c[1], c[0]))


SOURCES: dict[str, Callable[[Request, ShopperState], list[Candidate]]] = {
    "for_you": _for_you,
    "similar": _similar,
    "bought_together": _bought_together,
    "trending": _trending,
    "recently_viewed": _recently_viewed,
    "buy_again": _buy_again,
}


# -- reasons and rendering ------------------------------------------------------------------------------------------


def _anchors(reasons: Iterable[str]) -> set[str]:
    """The products that reason codes name ("because:<id>", "together:<id>", ...)."""
    return {
        reason.split(":", 1)[1]
        for reason in reasons
        if ":" in reason and reason.split(":", 1)[0] in ("because", "session", "together", "similar")
    }


def _name_reasons(items: list[Recommendation]) -> None:
    anchors = _anchors(item.reason for item in items)
    names = {pid: profile.name for pid, profile in _profiles(anchors).items()} if anchors else {}
    for item in items:
        item.reason_text = reason_text(item.reason, names)


_REASON_TEXTS = {  # lazy: translated in the shopper's language when a block is built
    "trending": gettext_lazy("Trending now"),
    "popular": gettext_lazy("Popular"),
    "also": gettext_lazy("Often viewed together"),
    "for_you": gettext_lazy("Picked for your taste"),
    "viewed": gettext_lazy("You viewed this"),
    "repeat": gettext_lazy("You bought this before"),
    "new": gettext_lazy("New arrival"),
    "featured": gettext_lazy("Featured"),
    "rule": gettext_lazy("Selected for you"),
}


def reason_text(reason: str, names: dict[str, str]) -> str:
    """A shopper-facing sentence for a reason code, so wording (and language) can change without a recompute."""
    kind, _, arg = reason.partition(":")
    if kind in ("because", "session"):  # the stored list's anchor or this session's: the same to a shopper
        anchor = names.get(arg)
        return (
            gettext("Because you looked at %(name)s") % {"name": anchor}
            if anchor
            else gettext("Based on your browsing")
        )
    if kind == "together":
        anchor = names.get(arg)
        return (
            gettext("Bought together with %(name)s") % {"name": anchor} if anchor else gettext("Often bought together")
        )
    if kind == "similar":
        anchor = names.get(arg)
        return gettext("Similar to %(name)s") % {"name": anchor} if anchor else gettext("Similar")
    if kind == "trending" and arg:
        return gettext("Trending in %(category)s") % {"category": arg.replace("-", " ").replace("_", " ").title()}
    return str(_REASON_TEXTS.get(kind, ""))


def attach_products(block: Block) -> Block:
    """Load the host's product objects and the engine's profile (name, price, brand, category) for rendering; drops
    ids the host no longer has. The default card reads the profile, which sync_products filled through
    PRODUCT_FIELDS, because the host's model may call its fields anything (`title`, `amount`)."""
    ids = [item.product_id for item in block.items]
    products = catalog.get_products(ids)
    profiles = _profiles(ids)  # read by the build already: from the pass or the process' hold
    kept = []
    for item in block.items:
        item.product = products.get(item.product_id)
        if item.product is not None:
            profile = profiles.get(item.product_id)
            if profile is not None:
                item.category, item.brand = profile.category, profile.brand
                item.name, item.price = profile.name, profile.price
            kept.append(item)
    block.items = kept
    if any(not item.reason_text for item in kept):
        _name_reasons([item for item in kept if not item.reason_text])
    return block


# -- the old entry points ------------------------------------------------------------------------------------------


def recommend_for_shopper(shopper: str, limit: int, exclude: Iterable[str] = ()) -> Block:
    return recommend("for_you", shopper=shopper, limit=limit, exclude=exclude)


def similar_products(product_id: str, limit: int) -> Block:
    return recommend("similar", product_id=str(product_id), limit=limit)


def trending(limit: int, category: str | None = None, exclude: Iterable[str] = ()) -> Block:
    return recommend("trending", category=category or "", limit=limit, exclude=exclude)


# -- cache keys ----------------------------------------------------------------------------------------------------


def _block_key(req: Request) -> str:
    """Per shopper; the shared lists underneath are cached apart.

    Every block depends on the shopper (bought items, cart, session, experiment arm), so no shopper's block is ever
    served to another; an anonymous request without a shopper gets the shared key. The active set, the shopper's
    version and the rules' version are not in the key but stamped in the value (`_cached_block`).
    """
    digest = hashlib.sha256(
        "|".join(
            [
                ",".join(sorted(req.exclude)),
                "-" if req.cart is None else ",".join(sorted(req.cart)),
                req.campaign,
                ",".join(sorted(f"{source}={title}" for source, title in req.taken)),
            ]
        ).encode()
    ).hexdigest()[:16]
    return keys.cache_key("block", req.placement, req.shopper, req.product_id, req.category, req.limit or 0, digest)


def _cached_block(req: Request) -> tuple[str, tuple[int, str, str], dict[str, Any] | None]:
    """The block's key, the stamp it must carry to be current (active set, shopper version, rules version) and the
    cached block if it is. One round trip reads all of them (the versions and set come from the pass when an earlier
    block read them); a new event, a new set or a rule saved in the admin retires the cached blocks it affects."""
    key = _block_key(req)
    memo = store.current_pass.get() or RenderPass()
    version_key = keys.cache_key("shopper", req.shopper) if req.shopper and req.shopper not in memo.versions else None
    wanted = [
        key,
        *([] if memo.set_known else [keys.ACTIVE_SET]),
        *([version_key] if version_key else []),
        *([] if memo.rules_version is not None else [rules.VERSION_KEY]),
        *([] if memo.profiles_version is not None else [catalog.PROFILES_VERSION_KEY]),
    ]
    found = cache.get_many(wanted) if len(wanted) > 1 else {key: cache.get(key)}
    if not memo.set_known:
        memo.set_id, memo.set_known = store.active_set_from(found.get(keys.ACTIVE_SET)), True
    if version_key:
        memo.versions[req.shopper] = str(found.get(version_key) or "0")
    if memo.rules_version is None:
        memo.rules_version = rules.version_from(found.get(rules.VERSION_KEY))
    if memo.profiles_version is None:
        version = found.get(catalog.PROFILES_VERSION_KEY)
        memo.profiles_version = version if isinstance(version, int) else 0
        if not memo.profiles_version:  # none yet, or the cache was emptied: start one, used from the next page on
            catalog.start_profiles_version()
    stamp = (memo.set_id or 0, memo.versions[req.shopper] if req.shopper else "0", memo.rules_version)
    cached = found.get(key)
    return key, stamp, cached if cached is not None and cached.get("stamp") == stamp else None
