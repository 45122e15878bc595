"""Lists that come from purchases alone: `bought_together` (per product) and `buy_again` (one shared list).

bought_together: what is bought *in the same order* as a product. A purchase event names its order in
`context["order_id"]` (the shop's checkout does); events without one (imported history, other integrations) are
grouped per shopper: consecutive purchases no more than `window_minutes` apart form one basket. Pairs are scored
with an asymmetric-cosine association shrunk by support,

    score(a -> b) = c_ab / (n_a^alpha * n_b^(1 - alpha)) * c_ab / (c_ab + shrinkage)

where c_ab is the number of baskets holding both and n_x the baskets holding x. Raw co-counts would put the best
sellers next to everything; dividing by n_b^(1-alpha) takes their popularity out, n_a^alpha only scales a row (it
makes scores comparable across anchors), and the shrinkage plus a minimum support keep one lucky basket of two rare
products from topping a list. alpha = 0.5 is the cosine of the two products' basket vectors.

buy_again: per product, the share of its buyers who bought it again on another occasion (purchases of the same
product by the same shopper less than REPEAT_GAP_HOURS apart are one occasion: a split or corrected order, not a
habit), shrunk toward 0 for products with few buyers: repeat_buyers / (buyers + shrinkage). With it, the typical
repurchase interval: each repeat buyer's median days between occasions, then the median over those buyers (so one
very frequent buyer does not set the interval for everyone). Stored as one list, [[pid, score, "repeat",
interval_days], ...]; serving ranks a shopper's own past purchases by it.

Buyers too recent to have re-bought yet (right-censoring) are left out of the repeat rate. A buyer counts, in the
denominator and, if they re-bought, in the numerator, only when their first purchase of the product is at least
the product's observation window before the end of the data; the window is the product's typical repurchase
interval, and never less than `min_observation_days` (PurchaseParams; MIN_OBSERVATION_DAYS by default). The end of
the data is the newest event the precompute loaded (the newest purchase when none is given), as ages are elsewhere.
Without this, a coffee bought last week by a hundred new customers would look like nobody re-buys it. Recent
buyers who already re-bought are left out as well: counting them while their peers who have not re-bought *yet*
are left out would inflate the rate, most of all for a new product, all of whose buyers are recent. The rule is
applied per buyer, not per product, so an old product's long-standing buyers count while its newest ones wait.
The interval is a median, so a buyer observed for exactly that long has had about half a chance to re-buy:
the rule is a floor that removes the bulk of the bias, not a full survival estimate.

Bots (dataset.bot_shopper_codes: more than BOT_MAX_EVENTS_PER_MINUTE events in a calendar minute, the definition
training uses) are left out when the log is loaded, so a script buying pairs in bulk shapes neither list.

Pure numpy/scipy (the rows come from `recommendations.lists.purchases`, which reads them from the database); ties
break on item index, so the same data gives the same lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine import reasons
from recommendations.engine.cooccurrence import (
    CatalogView,
    ScoredPairs,
    StageProgress,
    _Silent,
    _top_per_group,
    top_k_per_item,
)
from recommendations.engine.dataset import LOAD_CHUNK, MICROS_PER_DAY, micros

MICROS_PER_MINUTE = 60 * 1_000_000
# Support shrinkage of a pair, as for the similar lists: a pair seen in 3 baskets keeps half its association.
BOUGHT_TOGETHER_SHRINKAGE = 3.0
# A basket with more distinct products than this (a wholesale or office order) says little about any one pair.
MAX_BASKET_ITEMS = 50
# Purchases of one product by one shopper closer than this are one occasion, not a repeat.
REPEAT_GAP_HOURS = 12.0
# A shop-wide repeat habit needs at least this many shoppers who re-bought the product.
MIN_REPEAT_BUYERS = 2
# A buyer counts toward a product's repeat rate once observed for its repurchase interval, and at least this long.
MIN_OBSERVATION_DAYS = 7.0
# The buy_again list is one JSON row read on every request; past this length the tail is dropped (lowest scores).
MAX_BUY_AGAIN_ITEMS = 5000
DEFAULT_ITEM_CHUNK = 512

PurchaseRow = tuple[str, str, datetime, Any]  # (shopper, product_id, occurred_at, order id or None)
# (placement, subject, [(product_id, score, reason, *extra)]): buy_again items carry their interval as a 4th element.
PurchaseListRow = tuple[str, str, list[tuple[Any, ...]]]


@dataclass
class PurchaseLog:
    """Every purchase event as parallel arrays; shopper, item and order are integer codes."""

    shoppers: list[str]
    items: list[str]
    shopper_idx: np.ndarray  # int64
    item_idx: np.ndarray  # int64
    occurred_us: np.ndarray  # int64 microseconds since the epoch
    order_idx: np.ndarray  # int64 code of (shopper, order id); -1 when the event names no order
    n_orders: int
    left_out_events: int = 0  # purchases of the shoppers the loader was told to leave out (bots)

    @property
    def n_events(self) -> int:
        return int(self.item_idx.size)


def purchase_log_from_rows(
    rows: Iterable[PurchaseRow],
    item_ids: Sequence[str],
    on_row_chunk: Callable[[int], None] | None = None,
    leave_out: AbstractSet[str] = frozenset(),
) -> PurchaseLog:
    """Arrays from (shopper, product_id, occurred_at, order_id) rows; unknown products and the shoppers in
    `leave_out` (bots) are skipped.

    Orders are keyed per shopper, so two integrations that both number their orders from 1 never merge baskets.
    """
    item_code = {pid: i for i, pid in enumerate(item_ids)}
    shopper_code: dict[str, int] = {}
    order_code: dict[tuple[int, str], int] = {}
    s_idx: list[int] = []
    i_idx: list[int] = []
    when: list[int] = []
    orders: list[int] = []
    seen = left_out = 0
    for shopper, product_id, occurred_at, order_id in rows:
        seen += 1
        if on_row_chunk is not None and seen % LOAD_CHUNK == 0:
            on_row_chunk(LOAD_CHUNK)
        item = item_code.get(product_id)
        if item is None or not shopper:
            continue
        if shopper in leave_out:
            left_out += 1
            continue
        code = shopper_code.setdefault(shopper, len(shopper_code))
        s_idx.append(code)
        i_idx.append(item)
        when.append(micros(occurred_at))
        if order_id is None or order_id == "":
            orders.append(-1)
        else:
            orders.append(order_code.setdefault((code, str(order_id)), len(order_code)))
    if on_row_chunk is not None and seen % LOAD_CHUNK:
        on_row_chunk(seen % LOAD_CHUNK)
    return PurchaseLog(
        shoppers=list(shopper_code),
        items=list(item_ids),
        shopper_idx=np.asarray(s_idx, dtype=np.int64),
        item_idx=np.asarray(i_idx, dtype=np.int64),
        occurred_us=np.asarray(when, dtype=np.int64),
        order_idx=np.asarray(orders, dtype=np.int64),
        n_orders=len(order_code),
        left_out_events=left_out,
    )


# ---- bought_together -------------------------------------------------------------------------------------------------


def basket_of_event(log: PurchaseLog, window_minutes: float) -> tuple[np.ndarray, int]:
    """Each event's basket code, and how many baskets came from the time window rather than an order id.

    Events with an order id take their order's code. The others are sorted by shopper and time; a new basket starts
    at another shopper or after a gap of more than `window_minutes` since the shopper's previous such purchase.
    """
    basket = log.order_idx.copy()
    loose = np.flatnonzero(basket < 0)
    if loose.size == 0:
        return basket, 0
    order = loose[np.lexsort((log.occurred_us[loose], log.shopper_idx[loose]))]
    shopper, when = log.shopper_idx[order], log.occurred_us[order]
    starts = np.ones(order.size, dtype=bool)
    starts[1:] = (shopper[1:] != shopper[:-1]) | (when[1:] - when[:-1] > int(window_minutes * MICROS_PER_MINUTE))
    groups = np.cumsum(starts) - 1
    basket[order] = log.n_orders + groups
    return basket, int(starts.sum())


def basket_matrix(log: PurchaseLog, basket: np.ndarray, max_items: int = MAX_BASKET_ITEMS) -> sp.csr_matrix:
    """Basket x item, 1 where the basket holds the item; baskets of more than `max_items` products are left out."""
    n_baskets = int(basket.max()) + 1 if basket.size else 0
    shape = (n_baskets, len(log.items))
    matrix = sp.coo_matrix((np.ones(basket.size, dtype=np.float64), (basket, log.item_idx)), shape=shape).tocsr()
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    too_big = np.flatnonzero(np.diff(matrix.indptr) > max_items)
    if too_big.size:
        keep = np.ones(n_baskets, dtype=np.float64)
        keep[too_big] = 0.0
        matrix = (sp.diags(keep) @ matrix).tocsr()
        matrix.eliminate_zeros()
    return matrix


def together_scores(
    baskets: sp.csr_matrix,
    k: int,
    allowed: np.ndarray,
    alpha: float = 0.5,
    min_support: int = 2,
    shrinkage: float = BOUGHT_TOGETHER_SHRINKAGE,
    chunk_size: int = DEFAULT_ITEM_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> sp.csr_matrix:
    """Item x item sparse matrix holding, for every item (row), its `k` best allowed co-purchased items.

    Pairs bought together in fewer than `min_support` baskets are dropped; the rest are scored as in the module
    docstring. Computed a block of anchor items at a time, so memory follows the block, not the catalog squared.
    """
    n_items = baskets.shape[1]
    if n_items == 0 or baskets.nnz == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    x = baskets.tocsr()
    x_t = x.T.tocsr()
    count = np.asarray(x.sum(axis=0)).ravel()
    allowed = np.asarray(allowed, dtype=bool)

    def score_block(start: int, stop: int) -> ScoredPairs:
        co = (x_t[start:stop] @ x).tocoo()
        anchor = co.row.astype(np.int64) + start
        other = co.col.astype(np.int64)
        together = co.data
        keep = (other != anchor) & (together >= min_support) & allowed[other]
        anchor, other, together = anchor[keep], other[keep], together[keep]
        score = (
            together
            / (count[anchor] ** alpha * count[other] ** (1.0 - alpha))
            * (together / (together + float(shrinkage)))
        )
        return anchor, other, score

    return top_k_per_item(n_items, k, score_block, chunk_size=chunk_size, on_chunk=on_chunk)


# ---- buy_again -------------------------------------------------------------------------------------------------------


@dataclass
class RepeatStats:
    """Per item (index-aligned with the log's items)."""

    buyers: np.ndarray  # int64, distinct shoppers who bought it, observed long enough to have re-bought
    repeat_buyers: np.ndarray  # int64, of those, shoppers who bought it on 2+ occasions
    score: np.ndarray  # float64, repeat_buyers / (buyers + shrinkage)
    interval_days: np.ndarray  # float64, median over repeat buyers of their median gap; nan without repeat buyers
    recent_buyers: np.ndarray  # int64, buyers left out as too recent to judge (see the module docstring)


def _group_medians(groups: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group, median of its values) for every group present, groups ascending; vectorized over all groups."""
    order = np.lexsort((values, groups))
    groups, values = groups[order], values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    lengths = np.diff(np.r_[starts, groups.size])
    low = values[starts + (lengths - 1) // 2]
    high = values[starts + lengths // 2]
    return groups[starts], (low + high) / 2.0


def repeat_stats(
    log: PurchaseLog,
    shrinkage: float,
    gap_hours: float = REPEAT_GAP_HOURS,
    min_observation_days: float = MIN_OBSERVATION_DAYS,
    observed_until_us: int | None = None,
) -> RepeatStats:
    """How often, and how many days apart, each product's buyers buy it again (see the module docstring).

    `observed_until_us` is the end of the data (default: the newest purchase in the log); a buyer whose first
    purchase of a product is less than max(its interval, `min_observation_days`) before it is left out of the rate.
    """
    n_items = len(log.items)
    buyers = np.zeros(n_items, dtype=np.int64)
    repeaters = np.zeros(n_items, dtype=np.int64)
    recent = np.zeros(n_items, dtype=np.int64)
    interval = np.full(n_items, np.nan)
    if log.n_events:
        pair = log.shopper_idx * max(n_items, 1) + log.item_idx
        order = np.lexsort((log.occurred_us, pair))
        pair, when = pair[order], log.occurred_us[order]
        first_of_pair = np.ones(pair.size, dtype=bool)
        first_of_pair[1:] = pair[1:] != pair[:-1]
        # An occasion starts at a pair's first purchase or after a long enough gap since the pair's previous one.
        gap = np.zeros(pair.size, dtype=np.int64)
        gap[1:] = when[1:] - when[:-1]
        occasion = first_of_pair | (gap >= int(gap_hours * 3600 * 1_000_000))
        pair, when, first_of_pair = pair[occasion], when[occasion], first_of_pair[occasion]
        item_of_pair = pair % max(n_items, 1)
        # Days since the pair's previous occasion, for every occasion after the first: the interval reads every
        # repeat buyer, recent or not (a gap that happened is known, whoever had it).
        repeat = ~first_of_pair
        if repeat.any():
            days = np.diff(when, prepend=when[0]).astype(np.float64) / MICROS_PER_DAY
            repeat_pairs, per_buyer = _group_medians(pair[repeat], days[repeat])
            items, medians = _group_medians(repeat_pairs % max(n_items, 1), per_buyer)
            interval[items] = medians
        # One entry per (buyer, product): its item, first purchase, and whether it was bought on 2+ occasions.
        starts = np.flatnonzero(first_of_pair)
        item, first_us = item_of_pair[starts], when[starts]
        rebought = np.diff(np.r_[starts, pair.size]) > 1
        until = int(when.max()) if observed_until_us is None else int(observed_until_us)
        window_days = np.fmax(interval, float(min_observation_days))  # fmax: no interval yet means the minimum
        observed = (until - first_us) >= np.round(window_days[item] * MICROS_PER_DAY)
        np.add.at(buyers, item[observed], 1)
        np.add.at(repeaters, item[observed & rebought], 1)
        np.add.at(recent, item[~observed], 1)
    score = repeaters / (buyers + float(shrinkage))
    return RepeatStats(
        buyers=buyers, repeat_buyers=repeaters, score=score, interval_days=interval, recent_buyers=recent
    )


# ---- both, for a precompute ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseParams:
    list_length: int = 20  # bought_together items per product (SIMILAR_N)
    window_minutes: float = 10.0
    alpha: float = 0.5
    min_support: int = 2
    shrinkage: float = BOUGHT_TOGETHER_SHRINKAGE
    repeat_shrinkage: float = 5.0
    min_repeat_score: float = 0.1
    min_repeat_buyers: int = MIN_REPEAT_BUYERS
    min_observation_days: float = MIN_OBSERVATION_DAYS
    item_chunk: int = DEFAULT_ITEM_CHUNK


def compute_lists(
    log: PurchaseLog,
    catalog: CatalogView,
    params: PurchaseParams,
    progress: StageProgress | None = None,
    stats: dict[str, Any] | None = None,
    observed_until_us: int | None = None,
) -> Iterator[PurchaseListRow]:
    """bought_together lists (one per active product that has any), then the shared buy_again list.

    Only active products are listed or recommended (inactive ones still count in the baskets); stock is left to
    serving, as for the similar lists. `stats`, when given, receives counts for the run's report.
    `observed_until_us`: the end of the data for buy_again's censoring rule (default: the newest purchase).
    """
    progress = progress or _Silent()
    ids = catalog.item_ids
    basket, window_baskets = basket_of_event(log, params.window_minutes)
    matrix = basket_matrix(log, basket)
    if stats is not None:
        stats.update(
            purchase_events=log.n_events,
            bot_purchases_left_out=log.left_out_events,
            baskets=int(matrix.shape[0]),
            baskets_by_window=window_baskets,
            multi_item_baskets=int((np.diff(matrix.indptr) > 1).sum()),
        )
    neighbours = together_scores(
        matrix,
        params.list_length,
        catalog.active,
        alpha=params.alpha,
        min_support=params.min_support,
        shrinkage=params.shrinkage,
        chunk_size=params.item_chunk,
        on_chunk=progress.advance,
    )
    for item in np.flatnonzero(catalog.active & (np.diff(neighbours.indptr) > 0)):
        lo, hi = neighbours.indptr[item], neighbours.indptr[item + 1]
        other, score = neighbours.indices[lo:hi], neighbours.data[lo:hi]
        ranked = np.lexsort((other, -score))
        anchor = ids[item]
        yield (
            "bought_together",
            anchor,
            [(ids[int(other[r])], float(score[r]), f"{reasons.TOGETHER_}{anchor}") for r in ranked],
        )

    repeats = repeat_stats(
        log,
        params.repeat_shrinkage,
        min_observation_days=params.min_observation_days,
        observed_until_us=observed_until_us,
    )
    listed = np.flatnonzero(
        catalog.active
        & (repeats.repeat_buyers >= params.min_repeat_buyers)
        & (repeats.score >= params.min_repeat_score)
    )
    if stats is not None:
        stats["repeat_products"] = int(listed.size)
        stats["repeat_buyers_too_recent"] = int(repeats.recent_buyers.sum())
    if listed.size:
        best = listed[_top_per_group(np.zeros(listed.size, dtype=np.int64), repeats.score[listed], MAX_BUY_AGAIN_ITEMS)]
        yield (
            "buy_again",
            "",
            [
                (ids[i], float(repeats.score[i]), reasons.REPEAT, round(float(repeats.interval_days[i]), 2))
                for i in best
            ],
        )
