"""Turning event rows into numpy arrays and the weighted, damped shopper x item matrix the engine learns from.

Ages are measured from the newest event in the data, not from the wall clock, so a history imported from
1998 trains exactly like the same history recorded this week. Only product ids the catalog knows (a
ProductProfile, active or not) get a column; events on unknown products are dropped here. Pure numpy: the rows
come from `recommendations.training.loading`, which reads them from the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import scipy.sparse as sp

from recommendations.engine.base import EVENT_TYPE_CODES, MIN_CELL_WEIGHT, Interactions, ItemFeatures, decay

__all__ = ["MIN_CELL_WEIGHT", "decay"]  # re-exported: cooccurrence and refresh read them from here

MICROS_PER_DAY = 86_400 * 1_000_000
LOAD_CHUNK = 10_000

EventRow = tuple[str, str, str, datetime]  # (shopper, product_id, event_type, occurred_at)


@dataclass
class EventLog:
    """Every usable event as parallel arrays; shoppers and items are integer codes into the two lists."""

    shoppers: list[str]
    items: list[str]
    shopper_idx: np.ndarray  # int32
    item_idx: np.ndarray  # int32
    type_weight: np.ndarray  # float64, from EVENT_WEIGHTS (0 for types loaded only to know purchases)
    is_purchase: np.ndarray  # bool
    occurred_us: np.ndarray  # int64 microseconds since the epoch: exact differences, no float drift
    event_code: np.ndarray | None = None  # int8, base.EVENT_TYPE_CODES (0 for types without a code)

    @property
    def n_events(self) -> int:
        return int(self.shopper_idx.size)

    @property
    def n_items_with_events(self) -> int:
        return int(np.unique(self.item_idx).size)

    @property
    def newest_us(self) -> int | None:
        return int(self.occurred_us.max()) if self.n_events else None

    def age_days(self) -> np.ndarray:
        """Each event's age in days before the newest event in the log."""
        if not self.n_events:
            return np.zeros(0)
        return (self.occurred_us.max() - self.occurred_us).astype(np.float64) / MICROS_PER_DAY


def micros(moment: datetime) -> int:
    # Integer arithmetic on an aware datetime: exact to the microsecond whatever the year.
    delta = moment - datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def loaded_event_types(weights: dict[str, float]) -> list[str]:
    """Types that train (weight > 0), plus purchases, which are needed to leave bought items out."""
    return sorted({t for t, w in weights.items() if w > 0} | {"purchase"})


def event_log_from_rows(
    rows: Iterable[EventRow],
    item_ids: Sequence[str],
    weights: dict[str, float],
    on_row_chunk: Callable[[int], None] | None = None,
) -> EventLog:
    """Arrays from (shopper, product_id, event_type, occurred_at) rows; unknown items and types are skipped."""
    item_code = {pid: i for i, pid in enumerate(item_ids)}
    shopper_code: dict[str, int] = {}
    types = loaded_event_types(weights)
    type_weight = {t: float(weights.get(t, 0.0)) for t in types}
    s_idx: list[int] = []
    i_idx: list[int] = []
    t_w: list[float] = []
    purchase: list[bool] = []
    when: list[int] = []
    codes: list[int] = []
    seen = 0
    for shopper, product_id, event_type, occurred_at in rows:
        seen += 1
        if on_row_chunk is not None and seen % LOAD_CHUNK == 0:
            on_row_chunk(LOAD_CHUNK)
        item = item_code.get(product_id)
        if item is None or not shopper or event_type not in type_weight:
            continue
        code = shopper_code.setdefault(shopper, len(shopper_code))
        s_idx.append(code)
        i_idx.append(item)
        t_w.append(type_weight[event_type])
        purchase.append(event_type == "purchase")
        when.append(micros(occurred_at))
        codes.append(EVENT_TYPE_CODES.get(event_type, 0))
    if on_row_chunk is not None and seen % LOAD_CHUNK:
        on_row_chunk(seen % LOAD_CHUNK)
    return EventLog(
        shoppers=list(shopper_code),
        items=list(item_ids),
        shopper_idx=np.asarray(s_idx, dtype=np.int32),
        item_idx=np.asarray(i_idx, dtype=np.int32),
        type_weight=np.asarray(t_w, dtype=np.float64),
        is_purchase=np.asarray(purchase, dtype=bool),
        occurred_us=np.asarray(when, dtype=np.int64),
        event_code=np.asarray(codes, dtype=np.int8),
    )


def interaction_matrix(log: EventLog, half_life_days: float) -> sp.csr_matrix:
    """Shopper x item: log1p of the summed type x recency weights, so 50 views cannot outweigh everything else."""
    shape = (len(log.shoppers), len(log.items))
    trains = log.type_weight > 0
    if not trains.any():
        return sp.csr_matrix(shape, dtype=np.float64)
    weight = log.type_weight[trains] * decay(log.age_days()[trains], half_life_days)
    matrix = sp.coo_matrix((weight, (log.shopper_idx[trains], log.item_idx[trains])), shape=shape).tocsr()
    matrix.sum_duplicates()
    matrix.data = np.maximum(np.log1p(matrix.data), MIN_CELL_WEIGHT)
    return matrix


def purchase_matrix(log: EventLog) -> sp.csr_matrix:
    """Shopper x item, 1 where the shopper ever bought the item."""
    shape = (len(log.shoppers), len(log.items))
    bought = log.is_purchase
    ones = np.ones(int(bought.sum()), dtype=np.int8)
    matrix = sp.coo_matrix((ones, (log.shopper_idx[bought], log.item_idx[bought])), shape=shape).tocsr()
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix


# ---- Training data: cleaning, per-shopper sequences, item features -------------------------------------------------

MICROS_PER_MINUTE = 60 * 1_000_000
N_PRICE_BANDS = 5


@dataclass
class CleaningStats:
    events_in: int = 0
    burst_repeats_dropped: int = 0
    bot_shoppers: int = 0
    bot_events_dropped: int = 0
    events_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def bot_shopper_codes(log: EventLog, max_events_per_minute: int) -> np.ndarray:
    """Codes of the shoppers with more than `max_events_per_minute` events in any one calendar minute, ascending.

    The one definition of a bot: training drops them in `clean_log`, and the purchase lists leave out their
    purchases (`bot_shoppers`), so a scraper or a bulk-buying script shapes neither.
    """
    if not log.n_events:
        return np.zeros(0, dtype=np.int64)
    key = np.stack([log.shopper_idx.astype(np.int64), log.occurred_us // MICROS_PER_MINUTE])
    shopper_minutes, counts = np.unique(key, axis=1, return_counts=True)
    return np.unique(shopper_minutes[0, counts > max_events_per_minute])


def bot_shoppers(log: EventLog, max_events_per_minute: int) -> set[str]:
    """The bots of `bot_shopper_codes` by shopper key, for filtering another log of the same shoppers."""
    return {log.shoppers[int(code)] for code in bot_shopper_codes(log, max_events_per_minute)}


def clean_log(log: EventLog, burst_seconds: float, bot_max_events_per_minute: int) -> tuple[EventLog, CleaningStats]:
    """Drop bots and collapse bursts, and sort the events by shopper, then time (the order sequences need).

    A bot is a shopper with more than `bot_max_events_per_minute` events in any one calendar minute: no person
    browses that fast, and a scraper would otherwise dominate popularity and co-occurrence. A burst is the same
    shopper doing the same thing to the same product again within `burst_seconds` (a double click, a reload):
    it says nothing new, so only the first one counts.
    """
    stats = CleaningStats(events_in=log.n_events)
    order = np.lexsort((log.occurred_us, log.shopper_idx))
    arrays = _take(log, order)
    if log.n_events:
        bots = bot_shopper_codes(arrays, bot_max_events_per_minute)
        is_bot = np.isin(arrays.shopper_idx, bots)
        stats.bot_shoppers = int(bots.size)
        stats.bot_events_dropped = int(is_bot.sum())
        arrays = _take(arrays, np.flatnonzero(~is_bot))
    if arrays.n_events:
        codes = arrays.event_code if arrays.event_code is not None else np.zeros(arrays.n_events, dtype=np.int8)
        # Same shopper, product and type: sort those together in time, and compare each with the one before.
        order = np.lexsort((arrays.occurred_us, codes, arrays.item_idx, arrays.shopper_idx))
        same = np.zeros(arrays.n_events, dtype=bool)
        s, i, c, t = arrays.shopper_idx[order], arrays.item_idx[order], codes[order], arrays.occurred_us[order]
        same[1:] = (s[1:] == s[:-1]) & (i[1:] == i[:-1]) & (c[1:] == c[:-1])
        same[1:] &= (t[1:] - t[:-1]) <= int(burst_seconds * 1_000_000)
        # Purchases are never a burst: two order lines of one product are two purchases.
        same &= ~arrays.is_purchase[order]
        drop = np.zeros(arrays.n_events, dtype=bool)
        drop[order[same]] = True
        stats.burst_repeats_dropped = int(drop.sum())
        arrays = _take(arrays, np.flatnonzero(~drop))
    stats.events_out = arrays.n_events
    return arrays, stats


def _take(log: EventLog, rows: np.ndarray) -> EventLog:
    return EventLog(
        shoppers=log.shoppers,
        items=log.items,
        shopper_idx=log.shopper_idx[rows],
        item_idx=log.item_idx[rows],
        type_weight=log.type_weight[rows],
        is_purchase=log.is_purchase[rows],
        occurred_us=log.occurred_us[rows],
        event_code=None if log.event_code is None else log.event_code[rows],
    )


def only_shoppers(log: EventLog, codes: np.ndarray) -> EventLog:
    """The events of the shoppers with these codes (codes and item codes keep their meaning): cleaning and
    interactions are per shopper, so a subset scores exactly as it would in the whole log, at its own cost."""
    return _take(log, np.flatnonzero(np.isin(log.shopper_idx, np.asarray(codes, dtype=np.int64))))


def to_interactions(log: EventLog, reference_us: int | None = None) -> tuple[Interactions, list[str]]:
    """The training events (weight > 0) as Interactions sorted by shopper then time, and the shopper keys.

    Ages are days before `reference_us` (default: the newest event in the log). Shoppers are renumbered to
    those who have a training event, in first-seen order of the sorted log.
    """
    trains = log.type_weight > 0
    order = np.lexsort((log.occurred_us, log.shopper_idx))
    order = order[trains[order]]
    shopper_idx = log.shopper_idx[order]
    kept, new_code = np.unique(shopper_idx, return_inverse=True)
    reference = int(log.occurred_us.max()) if reference_us is None and log.n_events else int(reference_us or 0)
    ages = (reference - log.occurred_us[order]).astype(np.float64) / MICROS_PER_DAY
    codes = log.event_code[order] if log.event_code is not None else np.zeros(order.size, dtype=np.int8)
    interactions = Interactions(
        n_shoppers=int(kept.size),
        n_items=len(log.items),
        shopper=new_code.astype(np.int32).ravel(),
        item=log.item_idx[order].astype(np.int32),
        event_type=codes.astype(np.int8),
        weight=log.type_weight[order].astype(np.float32),
        age_days=np.maximum(ages, 0.0).astype(np.float32),
    )
    return interactions, [log.shoppers[int(s)] for s in kept]


ProfileRow = tuple[str, str, str, str, object, str, datetime | None]  # id, name, category, brand, price, text, created


def item_features(
    rows: Sequence[ProfileRow], interactions: Interactions | None = None, reference: datetime | None = None
) -> ItemFeatures:
    """Features of every catalog item, index-aligned with `rows` (the same order as the log's items).

    Filled in where missing (and documented on ItemFeatures): unknown category / brand / band get code 0, a
    missing price the median log price, a missing created date age 0. Price bands are catalog-wide quintiles of
    the price; popularity is log1p of distinct training shoppers, standardized.
    """
    n = len(rows)
    categories = sorted({r[2] for r in rows if r[2]})
    brands = sorted({r[3] for r in rows if r[3]})
    cat_code = {c: i + 1 for i, c in enumerate(categories)}
    brand_code = {b: i + 1 for i, b in enumerate(brands)}
    prices = np.array([float(r[4]) if r[4] is not None else np.nan for r in rows], dtype=np.float64)
    known = ~np.isnan(prices) & (np.nan_to_num(prices, nan=-1.0) >= 0)
    log_price = np.log1p(np.where(known, prices, 0.0))
    if known.any():
        median = float(np.median(log_price[known]))
        std = float(log_price[known].std()) or 1.0
        edges = np.quantile(log_price[known], np.linspace(0, 1, N_PRICE_BANDS + 1)[1:-1])
        band = np.where(known, np.searchsorted(edges, log_price, side="right") + 1, 0)
    else:
        median, std, band = 0.0, 1.0, np.zeros(n, dtype=np.int64)
    price_z = np.where(known, (log_price - median) / std, 0.0)
    popularity = np.zeros(n, dtype=np.float64)
    if interactions is not None and interactions.n_events:
        pairs = np.unique(interactions.shopper.astype(np.int64) * max(n, 1) + interactions.item)
        popularity = np.log1p(np.bincount(pairs % max(n, 1), minlength=n)).astype(np.float64)
        popularity = (popularity - popularity.mean()) / (popularity.std() or 1.0)
    created = [r[6] for r in rows]
    if reference is None:
        reference = max((c for c in created if c is not None), default=None)
    ages = np.array(
        [max((reference - c).total_seconds() / 86_400, 0.0) if c is not None and reference else 0.0 for c in created]
    )
    return ItemFeatures(
        item_ids=[str(r[0]) for r in rows],
        category=np.array([cat_code.get(r[2], 0) for r in rows], dtype=np.int32),
        brand=np.array([brand_code.get(r[3], 0) for r in rows], dtype=np.int32),
        price_z=price_z.astype(np.float32),
        price_band=np.asarray(band, dtype=np.int32),
        popularity=popularity.astype(np.float32),
        age_days=ages.astype(np.float32),
        text=[f"{r[1]} {r[5]}".strip() for r in rows],
        categories=categories,
        brands=brands,
    )
