"""The read side of the stored lists: the active set, one page's shared reads, and what a process holds.

Serving and the tunables (a cold-start rule that serves trending) both read stored lists; they read them here, below
both, so neither has to import the other. Precompute writes the lists; `forget_active_set` is what a set switch
calls (through the `set_activated` signal) so readers see the new set at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from django.core.cache import cache
from django.db import connections, router
from django.db.models import Q

from recommendations import keys, serving_sql
from recommendations.engine import reasons
from recommendations.holds import Hold
from recommendations.models import ProductProfile, RecommendationSet, StoredList

if TYPE_CHECKING:
    from recommendations.serving import ShopperState

ACTIVE_SET_TTL = 30  # seconds; precompute clears it on switch, the TTL only covers other processes' caches
SHARED_TTL = 60  # seconds a shared list (trending, popular, buy_again rates) is cached for everyone
HELD_PLACEMENTS = frozenset({"similar", "bought_together", "trending", "buy_again"})  # never rewritten in a set
LIST_HOLD_MAX = 5_000  # lists a process keeps, least recently used out first (~25 MB at 20 items each, measured)


class Profile(NamedTuple):
    """What serving reads of a product's profile, by name: the picker's filters and caps, merchandising's targets,
    the card's fields. A tuple underneath (one row of the profile query), so it is as cheap to keep and compare."""

    category: str
    brand: str
    active: bool
    in_stock: bool
    name: str
    price: Any  # Decimal, or None when the shop gave none


# -- one render pass -----------------------------------------------------------------------------------------------


@dataclass
class RenderPass:
    """What the blocks rendered together (one page, or one `recommend` call) read once and share.

    Nothing they read changes while one page renders, so reading it once per page answers what reading it per block
    would, with fewer round trips: a product page's three blocks used to read the same shopper's events three times.
    The template tag keeps one per request; outside a pass nothing is memoised. The blocks it builds are cached at
    once, or, when `pending` is a dict, kept there for `cache_pending` to write after the response (the tag's pass,
    when VisitorMiddleware will call it): one round trip per page, off the page's time.
    """

    set_id: int | None = None
    set_known: bool = False
    rules_version: str | None = None
    profiles_version: int | None = None  # None: not read yet; 0: none in the cache, profiles come from the database
    versions: dict[str, str] = field(default_factory=dict)
    states: dict[str, ShopperState] = field(default_factory=dict)
    profiles: dict[str, Profile | None] = field(default_factory=dict)  # None: the product has no profile
    lists: dict[tuple[str, ...], list[list[Any]]] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] | None = None  # block cache key -> value, not written yet
    # Shared source ("trending", "trending:<category>", "popular", ...) -> the title of the first block that showed
    # it: a later block with another title does not fill from it (`_shared_source`).
    source_titles: dict[str, str] = field(default_factory=dict)


current_pass: ContextVar[RenderPass | None] = ContextVar("recommendations_render_pass", default=None)


@contextmanager
def render_pass(shared: RenderPass | None = None) -> Iterator[RenderPass]:
    """Share reads between the blocks inside; an inner pass joins the one already open."""
    current = current_pass.get()
    if current is not None:
        yield current
        return
    token = current_pass.set(shared if shared is not None else RenderPass())
    try:
        yield current_pass.get()  # type: ignore[misc]
    finally:
        current_pass.reset(token)


# -- stored lists --------------------------------------------------------------------------------------------------


def active_set_id() -> int | None:
    memo = current_pass.get()
    if memo is not None and memo.set_known:
        return memo.set_id
    cached = cache.get(keys.ACTIVE_SET)
    row = active_set_from(cached)
    if memo is not None:
        memo.set_id, memo.set_known = row, True
    return row


def active_set_from(cached: Any) -> int | None:
    """The active set id from its cached value, or from the database (and cached) when the cache has none."""
    if cached is not None:
        return cached or None
    row = (
        RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE)
        .order_by("-activated_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    cache.set(keys.ACTIVE_SET, row or 0, ACTIVE_SET_TTL)
    return row


def forget_active_set() -> None:
    cache.delete(keys.ACTIVE_SET)


def stored_items(placement: str, subject: str = "") -> list[list[Any]]:
    """The raw [[product_id, score, reason, ...], ...] list stored for a subject, or [] if none."""
    set_id = active_set_id()
    if set_id is None:
        return []
    memo = current_pass.get()
    if memo is not None and (placement, subject) in memo.lists:
        return memo.lists[placement, subject]
    rows = list_rows(set_id, [placement], [subject])
    items = (rows[0][2] if rows else None) or []
    if memo is not None:
        memo.lists[placement, subject] = items
    return items


def stored_lists(placement: str, subjects: Iterable[str]) -> dict[str, list[list[Any]]]:
    """Several subjects' lists of one placement in one query."""
    subjects = list(dict.fromkeys(s for s in subjects if s))
    set_id = active_set_id()
    if set_id is None or not subjects:
        return {}
    memo = current_pass.get()
    if memo is not None and all((placement, s) in memo.lists for s in subjects):
        return {s: items for s in subjects if (items := memo.lists[placement, s])}
    return {subject: items for _, subject, items in list_rows(set_id, [placement], subjects)}


def read_lists(pairs: Iterable[tuple[str, str]]) -> None:
    """Read several (placement, subject) lists into the pass in one query; one with no row is kept as []."""
    memo = current_pass.get()
    set_id = active_set_id()
    wanted = [pair for pair in dict.fromkeys(pairs) if memo is not None and pair not in memo.lists]
    if memo is None or set_id is None or not wanted:
        return
    rows = list_rows(
        set_id, list(dict.fromkeys(placement for placement, _ in wanted)), list(dict.fromkeys(s for _, s in wanted))
    )
    found = {(placement, subject): items for placement, subject, items in rows}
    for pair in wanted:
        memo.lists[pair] = found.get(pair) or []


def list_rows(set_id: int, placements: list[str], subjects: list[str]) -> list[tuple[str, str, list[list[Any]]]]:
    """(placement, subject, items) of the set's lists in any of `placements` for any of `subjects`: what the process
    holds, and the rest in one query."""
    in_hold, missing = from_hold(set_id, [(placement, subject) for placement in placements for subject in subjects])
    rows = [(placement, subject, items) for (placement, subject), items in in_hold.items()]
    if missing:
        read = _read_list_rows(
            set_id, list(dict.fromkeys(p for p, _ in missing)), list(dict.fromkeys(s for _, s in missing))
        )
        hold_lists(set_id, missing, read)
        wanted = set(missing)
        rows += [row for row in read if (row[0], row[1]) in wanted]
    return [row for row in rows if row[2]]


def _read_list_rows(set_id: int, placements: list[str], subjects: list[str]) -> list[tuple[str, str, list[list[Any]]]]:
    connection = serving_sql.usable(StoredList)
    if connection is not None:
        return serving_sql.stored_lists(connection, set_id, placements, subjects)
    rows = StoredList.objects.filter(recommendation_set_id=set_id, placement__in=placements, subject__in=subjects)
    return list(rows.values_list("placement", "subject", "items"))


LIST_HOLD: Hold[tuple[str, str], list[list[Any]]] = Hold("lists", LIST_HOLD_MAX, owner=__name__)
"""The lists of products and the shared lists of the active set this process has read ([]: the set has none).

Precompute writes them before it activates the set and nothing writes them after (refresh rewrites only shoppers'
lists), so they hold for as long as the set is active: the similar lists of a shopper's session and a product page's
lists are then read from memory. Its generation is the active set's id: a new set starts it over; past LIST_HOLD_MAX
lists it forgets those used longest ago."""


def from_hold(
    set_id: int, pairs: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], list[list[Any]]], list[tuple[str, str]]]:
    """Of these (placement, subject) lists, those the process holds, and the ones it must read."""
    LIST_HOLD.start_unless_at(set_id)
    held = LIST_HOLD.get_many(pairs, generation=set_id)
    return held, [pair for pair in pairs if pair not in held]


def hold_lists(set_id: int, asked: list[tuple[str, str]], read: Iterable[tuple[str, str, list[list[Any]]]]) -> None:
    """Keep what was read of `asked` in the placements whose lists never change in a set (none found: []); dropped if
    another set became active meanwhile."""
    found = {(placement, subject): items for placement, subject, items in read}
    LIST_HOLD.put_many(
        ((pair, found.get(pair) or []) for pair in asked if pair[0] in HELD_PLACEMENTS), generation=set_id
    )


def shared_items(placement: str, subject: str = "") -> list[list[Any]]:
    """A list every shopper shares (trending, buy_again rates), cached for everyone per active set."""
    set_id = active_set_id()
    if set_id is None:
        return []
    memo = current_pass.get()
    if memo is not None and ("shared", placement, subject) in memo.lists:
        return memo.lists["shared", placement, subject]
    LIST_HOLD.start_unless_at(set_id)
    items = LIST_HOLD.get((placement, subject), generation=set_id)
    if items is None:
        key = keys.cache_key("shared", set_id, placement, subject)
        items = cache.get(key)
        if items is None:
            items = stored_items(placement, subject)
            cache.set(key, items, SHARED_TTL)
        hold_lists(set_id, [(placement, subject)], [(placement, subject, items)])
    if memo is not None:
        memo.lists["shared", placement, subject] = items
    return items


def prefetch_shared(placement: str, subjects: Iterable[str]) -> None:
    """Several shared lists from the cache in one round trip, into the pass (what is not cached, shared_items reads)."""
    memo = current_pass.get()
    set_id = active_set_id()
    if memo is None or set_id is None:
        return
    LIST_HOLD.start_unless_at(set_id)
    subjects = [s for s in subjects if ("shared", placement, s) not in memo.lists and (placement, s) not in LIST_HOLD]
    wanted = {keys.cache_key("shared", set_id, placement, s): s for s in subjects}
    if len(wanted) > 1:
        for key, items in cache.get_many(list(wanted)).items():
            memo.lists["shared", placement, wanted[key]] = items
            hold_lists(set_id, [(placement, wanted[key])], [(placement, wanted[key], items)])


def popular_items(limit: int, category: str | None = None) -> list[list[Any]]:
    """Last resort when nothing is precomputed yet: best sellers, then newest; cached for everyone."""
    key = keys.cache_key("popular", category or "", limit)
    rows = cache.get(key)
    if rows is None:
        qs = ProductProfile.objects.filter(active=True, in_stock=True)
        if category:
            in_category = Q(category=category)
            if connections[router.db_for_read(ProductProfile)].features.supports_json_field_contains:
                in_category |= Q(categories__contains=[category])  # a product in tea and coffee is in both
            qs = qs.filter(in_category)
        ranked = qs.order_by("-sales_count", "-created_at", "product_id").values_list("product_id", "sales_count")
        rows = [[pid, float(sales), reasons.POPULAR] for pid, sales in ranked[:limit]]
        cache.set(key, rows, SHARED_TTL)
    return rows
