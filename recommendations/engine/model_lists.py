"""for_you lists from a trained model: score shoppers a chunk at a time, mask, take the top N, name a reason.

Numpy only (every Recommender scores without TensorFlow), so it runs in any worker. Memory is bounded by the
chunk: rows x catalog float32 scores, sized so one chunk holds about SCORE_CELLS cells whatever the catalog.
The reason for an item is the shopper's most recent history item of the same category ("because you looked
at X"), else the generic "for_you".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import compress

import numpy as np
import scipy.sparse as sp

from recommendations.engine.base import Interactions, Recommender
from recommendations.engine.metrics import shared_order, top_k_scratch, top_k_shared

SCORE_CELLS = 16_000_000  # 64 MB of float32 scores per chunk

ShopperRow = tuple[int, list[tuple[int, float, int]]]  # (shopper code, [(item, score, anchor item or -1)])


def chunk_rows(n_items: int) -> int:
    return max(1, min(4096, SCORE_CELLS // max(n_items, 1)))


def last_item_per_category(history: Interactions, category_of_item: np.ndarray) -> dict[int, int]:
    """(shopper * n_categories + category) -> the shopper's most recent item in that category."""
    keys, items = _last_item_keys(history, category_of_item)
    return dict(zip(keys.tolist(), items.tolist(), strict=True))


def _last_item_keys(history: Interactions, category_of_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`last_item_per_category` as sorted keys and their items, for a vectorised lookup (searchsorted)."""
    if history.n_events == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n_cat = int(category_of_item.max()) + 2
    key = history.shopper.astype(np.int64) * n_cat + (category_of_item[history.item] + 1)
    # Events are in time order within a shopper: the last occurrence of a key is the most recent item.
    reversed_keys = key[::-1]
    uniq, first_in_reversed = np.unique(reversed_keys, return_index=True)
    last_pos = key.size - 1 - first_in_reversed
    return uniq, history.item[last_pos].astype(np.int64)


def recommend_chunks(
    model: Recommender,
    interactions: Interactions,
    exclude: sp.csr_matrix | None,
    allowed: np.ndarray | None,
    n: int,
    category_of_item: np.ndarray,
    shoppers: np.ndarray | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[list[ShopperRow]]:
    """Yield each chunk's lists: top `n` allowed items per shopper, excluded (e.g. bought) items left out.

    `shoppers` limits the work to these codes (a shard); default every shopper in `interactions`.
    The model's score array is used as top_k's scratch (no copy of the chunk): only masked cells change, and
    the picked items' scores, read afterwards, are never masked. Non-finite scores are left out of the lists.
    """
    codes = np.arange(interactions.n_shoppers) if shoppers is None else np.asarray(shoppers, dtype=np.int64)
    step = chunk_rows(interactions.n_items)
    n_cat = int(category_of_item.max()) + 2 if category_of_item.size else 1
    k = min(n, interactions.n_items)
    shared = model.shared_scores()  # popularity: one vector, sorted once, not a chunk of copies of it
    order = None
    if shared is not None:
        shared = np.asarray(shared, dtype=np.float32)
        order = shared_order(shared, allowed)
    for start in range(0, codes.size, step):
        chunk = codes[start : start + step]
        history = interactions.select(chunk)
        chunk_exclude = exclude[chunk] if exclude is not None else None
        if shared is not None:
            best = top_k_shared(shared, chunk.size, k, exclude=chunk_exclude, order=order)
            scores = np.broadcast_to(shared, (chunk.size, shared.size))  # a view: the picked items' scores
        else:
            scores = np.asarray(model.score_for_lists(history, chunk_exclude, allowed), dtype=np.float32)
            best = top_k_scratch(scores, k, exclude=chunk_exclude, allowed=allowed)
        rows = _chunk_rows(chunk, best, scores, history, category_of_item, n_cat)
        if on_chunk is not None:
            on_chunk(int(chunk.size))
        yield rows


def _chunk_rows(
    chunk: np.ndarray,
    best: np.ndarray,
    scores: np.ndarray,
    history: Interactions,
    category_of_item: np.ndarray,
    n_cat: int,
) -> list[ShopperRow]:
    """Each shopper's (item, score, anchor) rows, built from whole-chunk gathers rather than per-item lookups."""
    if best.shape[1] == 0:
        return []
    valid = best >= 0
    items = np.where(valid, best, 0)
    picked = np.take_along_axis(scores, items, axis=1)
    valid &= np.isfinite(picked)
    keys, last_items = _last_item_keys(history, category_of_item)
    if keys.size:
        lookup = np.arange(best.shape[0], dtype=np.int64)[:, None] * n_cat + (category_of_item[items] + 1)
        pos = np.minimum(np.searchsorted(keys, lookup), keys.size - 1)
        anchors = np.where(keys[pos] == lookup, last_items[pos], -1)
        anchors[anchors == items] = -1  # an item is not its own reason
    else:
        anchors = np.full(best.shape, -1, dtype=np.int64)
    rows: list[ShopperRow] = []
    full = valid.all(axis=1).tolist()
    for code, every, row_items, row_scores, row_anchors, row_valid in zip(
        chunk.tolist(), full, items.tolist(), picked.tolist(), anchors.tolist(), valid.tolist(), strict=True
    ):
        if every:
            rows.append((code, list(zip(row_items, row_scores, row_anchors, strict=True))))
        else:
            entries = list(compress(zip(row_items, row_scores, row_anchors, strict=True), row_valid))
            if entries:
                rows.append((code, entries))
    return rows
