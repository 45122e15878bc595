"""Turning Event rows into numpy arrays and the weighted, damped shopper x item matrix the engine learns from.

Ages are measured from the newest event in the data, not from the wall clock, so a history imported from
1998 trains exactly like the same history recorded this week. Only product ids the catalog knows (a
ProductProfile, active or not) get a column; events on unknown products are dropped here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import scipy.sparse as sp

MICROS_PER_DAY = 86_400 * 1_000_000
# One damped cell never drops below this, so ancient events stay structurally present (and never underflow to 0).
MIN_CELL_WEIGHT = 1e-9
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


def _micros(moment: datetime) -> int:
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
        when.append(_micros(occurred_at))
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
    )


def load_event_log(
    item_ids: Sequence[str],
    weights: dict[str, float],
    on_row_chunk: Callable[[int], None] | None = None,
) -> EventLog:
    """Stream the training events out of the database (a server-side cursor, so memory stays flat)."""
    from recommendations.models import Event

    qs = (
        Event.objects.filter(event_type__in=loaded_event_types(weights))
        .exclude(product_id="")
        .exclude(shopper="")
        .values_list("shopper", "product_id", "event_type", "occurred_at")
    )
    return event_log_from_rows(qs.iterator(chunk_size=LOAD_CHUNK), item_ids, weights, on_row_chunk)


def count_training_events(weights: dict[str, float]) -> int:
    """How many rows `load_event_log` will read, for an honest progress bar."""
    from recommendations.models import Event

    return (
        Event.objects.filter(event_type__in=loaded_event_types(weights))
        .exclude(product_id="")
        .exclude(shopper="")
        .count()
    )


def decay(age_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """Halve an event's weight every `half_life_days`."""
    return np.power(0.5, age_days / float(half_life_days))


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
