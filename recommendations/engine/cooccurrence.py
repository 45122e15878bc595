"""The first recommender: trending, item-item co-occurrence neighbours, and for_you scores built on them.

Pure numpy/scipy over the arrays from `engine.dataset`; no database, so every step is testable on a toy
pattern. Ties always break on item index, so the same data gives the same lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recommendations.engine import reasons
from recommendations.engine.dataset import EventLog, decay, interaction_matrix, purchase_matrix

# Pairs need support from a few shoppers before they can rank high: sim *= n / (n + SHRINKAGE).
DEFAULT_SHRINKAGE = 3.0
# Items per X.T @ X block; the block's size, not the catalog's, bounds memory.
DEFAULT_ITEM_CHUNK = 512
DEFAULT_SHOPPER_CHUNK = 2000
FOR_YOU_MIN_NEIGHBOURS = 20


def _top_per_group(groups: np.ndarray, scores: np.ndarray, n: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Positions of the `n` best scores within each group, ordered by group then score (desc) then tiebreak."""
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64)
    # lexsort's last key is the primary one.
    order = np.lexsort((-scores, groups)) if tiebreak is None else np.lexsort((tiebreak, -scores, groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    run_lengths = np.diff(np.r_[starts, sorted_groups.size])
    rank = np.arange(sorted_groups.size) - np.repeat(starts, run_lengths)
    return order[rank < n]


def strongest_signal_scores(shopper: np.ndarray, item: np.ndarray, weight: np.ndarray, n_items: int) -> np.ndarray:
    """Per item: Σ over distinct shoppers of their strongest event weight on it (float64).

    Each shopper counts once per item, so one bot viewing a product a thousand times weighs like one shopper.
    Trending (precompute) and the popularity baseline (training) both rank by it.
    """
    scores = np.zeros(n_items, dtype=np.float64)
    if weight.size == 0:
        return scores
    pair = shopper.astype(np.int64) * n_items + item
    order = np.argsort(pair, kind="stable")
    pair, weight = pair[order], weight[order]
    starts = np.r_[0, np.flatnonzero(np.diff(pair)) + 1]
    strongest = np.maximum.reduceat(weight, starts)
    np.add.at(scores, pair[starts] % n_items, strongest)
    return scores


def trending_scores(log: EventLog, window_days: float, half_life_days: float) -> np.ndarray:
    """Per item: Σ over distinct shoppers of their strongest recent signal (type weight x fast decay)."""
    if not log.n_events:
        return np.zeros(len(log.items), dtype=np.float64)
    age = log.age_days()
    recent = (age <= float(window_days)) & (log.type_weight > 0)
    weight = log.type_weight[recent] * decay(age[recent], half_life_days)
    return strongest_signal_scores(log.shopper_idx[recent], log.item_idx[recent], weight, len(log.items))


def top_items(scores: np.ndarray, allowed: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The `n` best allowed items with a positive score, as (item index, score)."""
    candidates = np.flatnonzero(allowed & (scores > 0))
    if candidates.size == 0:
        return []
    picked = candidates[_top_per_group(np.zeros(candidates.size, dtype=np.int64), scores[candidates], n)]
    return [(int(i), float(scores[i])) for i in picked]


def top_items_by_group(
    scores: np.ndarray,
    allowed: np.ndarray,
    group_of_item: np.ndarray,
    n: int,
    also_in: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[int, list[tuple[int, float]]]:
    """`top_items` within each group (e.g. category code); items with group -1 are left out.

    `also_in` is (item indices, group codes) of further groups items belong to: a product in tea and coffee ranks in
    both lists. Ties go by item index, as with one group per item.
    """
    candidates = np.flatnonzero(allowed & (scores > 0) & (group_of_item >= 0))
    groups = group_of_item[candidates]
    if also_in is not None and also_in[0].size:
        extra_items, extra_groups = also_in
        keep = allowed[extra_items] & (scores[extra_items] > 0)
        candidates = np.r_[candidates, extra_items[keep]]
        groups = np.r_[groups, extra_groups[keep]]
    result: dict[int, list[tuple[int, float]]] = {}
    if candidates.size == 0:
        return result
    for pos in _top_per_group(groups, scores[candidates], n, tiebreak=candidates):
        item = int(candidates[pos])
        result.setdefault(int(groups[pos]), []).append((item, float(scores[item])))
    return result


# One block of anchor items scored against candidates: (anchor item, candidate item, score), parallel int64,
# int64 and float64 arrays; anchors are absolute item indices, not offsets into the block.
ScoredPairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def top_k_per_item(
    n_items: int,
    k: int,
    score_block: Callable[[int, int], ScoredPairs],
    chunk_size: int = DEFAULT_ITEM_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> sp.csr_matrix:
    """Item x item sparse matrix holding each anchor item's `k` best-scored candidates (ties by item index).

    `score_block(start, stop)` scores the anchors start..stop-1. The similar lists (`item_neighbours`) and the
    bought_together lists (`purchases.together_scores`) differ only in that scoring; sharing the rest keeps their
    blocking (memory follows the block, not the catalog squared), tie-breaking and matrix layout the same.
    """
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for start in range(0, n_items, chunk_size):
        stop = min(start + chunk_size, n_items)
        anchor, candidate, score = score_block(start, stop)
        best = _top_per_group(anchor, score, k, tiebreak=candidate)
        rows.append(anchor[best])
        cols.append(candidate[best])
        vals.append(score[best])
        if on_chunk is not None:
            on_chunk(stop - start)
    if not vals:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    result = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items)
    ).tocsr()
    result.sort_indices()
    return result


def item_neighbours(
    matrix: sp.csr_matrix,
    k: int,
    allowed: np.ndarray,
    shrinkage: float = DEFAULT_SHRINKAGE,
    chunk_size: int = DEFAULT_ITEM_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> sp.csr_matrix:
    """Item x item sparse matrix holding, for every item (row), its `k` most similar allowed items.

    Similarity is cosine on the damped shopper x item matrix, shrunk by co-shopper support n/(n+shrinkage).
    Computed a block of items at a time (X[:, block].T @ X) so a 50k-item catalog never needs a dense n x n.
    """
    n_items = matrix.shape[1]
    if n_items == 0 or matrix.nnz == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float64)
    x = matrix.tocsr()
    binary = x.copy()
    binary.data = np.ones_like(binary.data)
    x_t = x.T.tocsr()
    binary_t = binary.T.tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    inv_norm = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    allowed = np.asarray(allowed, dtype=bool)

    def score_block(start: int, stop: int) -> ScoredPairs:
        dots = (x_t[start:stop] @ x).tocsr()
        support = (binary_t[start:stop] @ binary).tocsr()
        support.data = support.data / (support.data + shrinkage)
        sims = dots.multiply(support).tocoo()
        subject = sims.row.astype(np.int64) + start
        keep = (sims.col != subject) & allowed[sims.col]
        subject, neighbour = subject[keep], sims.col[keep].astype(np.int64)
        score = sims.data[keep] * inv_norm[subject] * inv_norm[neighbour]
        positive = score > 0
        return subject[positive], neighbour[positive], score[positive]

    return top_k_per_item(n_items, k, score_block, chunk_size=chunk_size, on_chunk=on_chunk)


def neighbour_list(neighbours: sp.csr_matrix, item: int) -> list[tuple[int, float]]:
    """One item's neighbours, best first (ties by item index)."""
    lo, hi = neighbours.indptr[item], neighbours.indptr[item + 1]
    idx, score = neighbours.indices[lo:hi], neighbours.data[lo:hi]
    order = np.lexsort((idx, -score))
    return [(int(idx[o]), float(score[o])) for o in order]


@dataclass
class ShopperList:
    shopper: int
    items: list[tuple[int, float, int]]  # (item, score, anchor item that contributed most)


def recommend_for_shoppers(
    matrix: sp.csr_matrix,
    neighbours: sp.csr_matrix,
    exclude: sp.csr_matrix,
    n: int,
    chunk_size: int = DEFAULT_SHOPPER_CHUNK,
) -> Iterator[list[ShopperList]]:
    """Yield, a chunk of shoppers at a time, each shopper's top `n` items by Σ_i w(shopper,i)·sim(i,j).

    `exclude` (shopper x item, e.g. purchases) removes items; shoppers with no candidates get no list.
    """
    n_shoppers, n_items = matrix.shape
    x = matrix.tocsr()
    excl = exclude.tocsr()
    k_ptr, k_idx, k_val = neighbours.indptr, neighbours.indices, neighbours.data
    for start in range(0, n_shoppers, chunk_size):
        stop = min(start + chunk_size, n_shoppers)
        block = x[start:stop].tocoo()
        shopper, anchor, weight = block.row.astype(np.int64), block.col.astype(np.int64), block.data
        degree = (k_ptr[anchor + 1] - k_ptr[anchor]).astype(np.int64)
        total = int(degree.sum())
        if total == 0:
            yield []
            continue
        # One row per (shopper, interacted item i, neighbour j of i): a sparse join done with repeat/arange.
        offsets = np.arange(total) - np.repeat(np.cumsum(degree) - degree, degree)
        pos = np.repeat(k_ptr[anchor], degree) + offsets
        shopper_r = np.repeat(shopper, degree)
        anchor_r = np.repeat(anchor, degree)
        target = k_idx[pos].astype(np.int64)
        contribution = np.repeat(weight, degree) * k_val[pos]
        key = shopper_r * n_items + target

        excl_block = excl[start:stop].tocoo()
        if excl_block.nnz:
            banned = excl_block.row.astype(np.int64) * n_items + excl_block.col
            keep = ~np.isin(key, banned)
            key, contribution, anchor_r = key[keep], contribution[keep], anchor_r[keep]
        if key.size == 0:
            yield []
            continue
        # Sorted by key, then biggest contribution first: each key's first row names its main anchor.
        order = np.lexsort((anchor_r, -contribution, key))
        key, contribution, anchor_r = key[order], contribution[order], anchor_r[order]
        starts = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
        score = np.add.reduceat(contribution, starts)
        pair = key[starts]
        main_anchor = anchor_r[starts]
        row, item = pair // n_items, pair % n_items
        # Positions come back grouped by shopper, best first; cut them into one list per shopper.
        best = _top_per_group(row, score, n, tiebreak=item)
        best_rows = row[best]
        cuts = np.flatnonzero(np.diff(best_rows)) + 1
        bounds = zip(np.r_[0, cuts].tolist(), np.r_[cuts, best.size].tolist(), strict=True)
        triples = list(zip(item[best].tolist(), score[best].tolist(), main_anchor[best].tolist(), strict=True))
        yield [ShopperList(shopper=start + int(best_rows[a]), items=triples[a:b]) for a, b in bounds]


@dataclass
class CatalogView:
    """The engine's view of the catalog, index-aligned with the item columns of the matrix."""

    item_ids: list[str]
    active: np.ndarray  # may be recommended at all
    servable: np.ndarray  # active and in stock: what trending may show
    categories: list[str]
    category_of_item: np.ndarray  # index into categories, -1 for none
    # (item indices, category codes) of the categories an item is in besides its own (a profile's `categories`).
    also_in_category: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    )

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Any, ...]]) -> CatalogView:
        """From (product_id, category, active, in_stock[, categories]) rows, in the order the item index should
        have; `categories` lists every category of a product in several (the first is usually `category`)."""
        rows = list(rows)
        extra = [
            (i, other)
            for i, r in enumerate(rows)
            if len(r) > 4 and r[4]
            for other in dict.fromkeys(r[4])
            if other != r[1]
        ]
        categories = sorted({r[1] for r in rows if r[1]} | {other for _, other in extra if other})
        code = {category: i for i, category in enumerate(categories)}
        extra = [(i, code[other]) for i, other in extra if other]
        active = np.array([bool(r[2]) for r in rows], dtype=bool)
        return cls(
            item_ids=[str(r[0]) for r in rows],
            active=active,
            servable=active & np.array([bool(r[3]) for r in rows], dtype=bool),
            categories=categories,
            category_of_item=np.array([code.get(r[1], -1) for r in rows], dtype=np.int64),
            also_in_category=(
                np.array([i for i, _ in extra], dtype=np.int64),
                np.array([c for _, c in extra], dtype=np.int64),
            ),
        )


@dataclass(frozen=True)
class ListParams:
    top_n: int = 50
    similar_n: int = 20
    recency_half_life_days: float = 30.0
    trending_window_days: float = 14.0
    trending_half_life_days: float = 3.0
    shrinkage: float = DEFAULT_SHRINKAGE
    item_chunk: int = DEFAULT_ITEM_CHUNK
    shopper_chunk: int = DEFAULT_SHOPPER_CHUNK


class StageProgress(Protocol):
    def start(self, stage: str, total: int = 1) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class _Silent:
    def start(self, stage: str, total: int = 1) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


ListRow = tuple[str, str, list[tuple[str, float, str]]]  # (placement, subject, [(product_id, score, reason)])


def compute_lists(
    log: EventLog,
    catalog: CatalogView,
    params: ListParams,
    progress: StageProgress | None = None,
    for_you: bool = True,
) -> Iterator[ListRow]:
    """Every list of one precompute, placement by placement: trending, then similar, then (unless a trained
    model makes them) for_you.

    A generator, so the caller can write lists as they come and never hold all for_you lists at once.
    """
    progress = progress or _Silent()
    ids = catalog.item_ids
    progress.start("build matrix")
    matrix = interaction_matrix(log, params.recency_half_life_days)
    bought = purchase_matrix(log)

    progress.start("trending")
    scores = trending_scores(log, params.trending_window_days, params.trending_half_life_days)
    shop_wide = top_items(scores, catalog.servable, params.top_n)
    if shop_wide:
        yield "trending", "", [(ids[i], s, reasons.TRENDING) for i, s in shop_wide]
    by_category = top_items_by_group(
        scores, catalog.servable, catalog.category_of_item, params.top_n, catalog.also_in_category
    )
    for code, ranked in sorted(by_category.items()):
        yield "trending", f"category:{catalog.categories[code]}", [(ids[i], s, reasons.TRENDING) for i, s in ranked]

    progress.start("similar", len(ids))
    # for_you draws its candidates from these neighbour lists: a few interacted items x 20 neighbours fill
    # TOP_N, and every extra neighbour multiplies the for_you work (the join below) for little gain.
    neighbours = item_neighbours(
        matrix,
        max(params.similar_n, FOR_YOU_MIN_NEIGHBOURS),
        catalog.active,
        shrinkage=params.shrinkage,
        chunk_size=params.item_chunk,
        on_chunk=progress.advance,
    )
    for item in np.flatnonzero(catalog.active & (np.diff(neighbours.indptr) > 0)):
        ranked = neighbour_list(neighbours, int(item))[: params.similar_n]
        yield "similar", ids[item], [(ids[j], s, reasons.ALSO) for j, s in ranked]

    if not for_you:
        return
    progress.start("for_you", len(log.shoppers))
    remaining = len(log.shoppers)
    for chunk in recommend_for_shoppers(matrix, neighbours, bought, params.top_n, chunk_size=params.shopper_chunk):
        for shopper_list in chunk:
            items = [(ids[j], s, f"{reasons.BECAUSE_}{ids[a]}") for j, s, a in shopper_list.items]
            yield "for_you", log.shoppers[shopper_list.shopper], items
        step = min(params.shopper_chunk, remaining)
        remaining -= step
        progress.advance(step)
