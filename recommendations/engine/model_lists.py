"""for_you lists from a trained model: score shoppers a chunk at a time, mask, take the top N, name a reason.

Numpy only (every Recommender scores without TensorFlow), so it runs in any worker. Memory is bounded by the
chunk: rows x catalog float32 scores, sized so one chunk holds about SCORE_CELLS cells whatever the catalog.
The reason for an item is the shopper's most recent history item of the same category ("because you looked
at X"), else the generic "for_you".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from recommendations.engine.base import Interactions, Recommender
from recommendations.engine.metrics import top_k

SCORE_CELLS = 16_000_000  # 64 MB of float32 scores per chunk

ShopperRow = tuple[int, list[tuple[int, float, int]]]  # (shopper code, [(item, score, anchor item or -1)])


def chunk_rows(n_items: int) -> int:
    return max(1, min(4096, SCORE_CELLS // max(n_items, 1)))


def last_item_per_category(history: Interactions, category_of_item: np.ndarray) -> dict[int, int]:
    """(shopper * n_categories + category) -> the shopper's most recent item in that category."""
    if history.n_events == 0:
        return {}
    n_cat = int(category_of_item.max()) + 2
    key = history.shopper.astype(np.int64) * n_cat + (category_of_item[history.item] + 1)
    # Events are in time order within a shopper: the last occurrence of a key is the most recent item.
    reversed_keys = key[::-1]
    uniq, first_in_reversed = np.unique(reversed_keys, return_index=True)
    last_pos = key.size - 1 - first_in_reversed
    return dict(zip(uniq.tolist(), history.item[last_pos].tolist(), strict=True))


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
    """
    codes = np.arange(interactions.n_shoppers) if shoppers is None else np.asarray(shoppers, dtype=np.int64)
    step = chunk_rows(interactions.n_items)
    n_cat = int(category_of_item.max()) + 2 if category_of_item.size else 1
    for start in range(0, codes.size, step):
        chunk = codes[start : start + step]
        history = interactions.select(chunk)
        scores = np.asarray(model.score(history), dtype=np.float32)
        chunk_exclude = exclude[chunk] if exclude is not None else None
        best = top_k(scores, min(n, interactions.n_items), exclude=chunk_exclude, allowed=allowed)
        anchors = last_item_per_category(history, category_of_item)
        rows: list[ShopperRow] = []
        for local, items in enumerate(best):
            picked = []
            for item in items.tolist():
                if item < 0:
                    continue
                score = float(scores[local, item])
                if not np.isfinite(score):
                    continue
                anchor = anchors.get(local * n_cat + int(category_of_item[item]) + 1, -1)
                picked.append((item, score, anchor if anchor != item else -1))
            if picked:
                rows.append((int(chunk[local]), picked))
        if on_chunk is not None:
            on_chunk(int(chunk.size))
        yield rows
