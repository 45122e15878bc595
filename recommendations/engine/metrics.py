"""Offline ranking metrics for any `Recommender`: top-k lists and NDCG / recall / HR / MRR / coverage.

Every candidate is scored the same way: shoppers in batches, their already-seen items masked (a for_you list is
for discovery), ties broken by item index so one set of scores always gives the same lists. Metrics are
accumulated batch by batch, so the blend search can score each component once per batch and try many weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recommendations.engine.base import EvalSet, Interactions, Recommender

ScoreFn = Callable[[Interactions], np.ndarray]

METRIC_KEYS = ("ndcg", "recall", "hr", "mrr", "coverage", "cold_recall", "n_shoppers")
# top_k works on row blocks of at most this many cells, so its temporaries stay small for any batch size.
TOP_K_BLOCK_CELLS = 4_000_000


def allowed_mask(allowed: np.ndarray | None, n_items: int) -> np.ndarray | None:
    """A boolean mask over items from either a boolean mask or an array of item indices (None stays None)."""
    if allowed is None:
        return None
    allowed = np.asarray(allowed)
    if allowed.dtype == bool:
        if allowed.shape != (n_items,):
            raise ValueError(f"allowed mask has shape {allowed.shape}, expected ({n_items},)")
        return allowed
    mask = np.zeros(n_items, dtype=bool)
    mask[allowed.astype(np.int64)] = True
    return mask


def top_k(
    scores: np.ndarray,
    k: int,
    exclude: sp.spmatrix | None = None,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Rows x k item indices, best first, ties broken by lower item index; -1 pads rows with too few items.

    `exclude` (rows x items, any nonzero excludes) and items outside `allowed` (bool mask or indices) never
    appear; NaN scores count as excluded. Selection is a partition (O(items) per row), not a full sort; only
    the k winners get sorted. `scores` is left untouched.
    """
    return _top_k(scores, k, exclude, allowed, scratch=False)


def top_k_scratch(
    scores: np.ndarray, k: int, exclude: sp.spmatrix | None = None, allowed: np.ndarray | None = None
) -> np.ndarray:
    """`top_k` that may overwrite `scores` (saves a copy per call when the caller throws the scores away).

    Only masked cells change (excluded, disallowed and NaN ones become -inf): the scores of the items it
    returns are still the caller's, so they can be read back afterwards.
    """
    return _top_k(scores, k, exclude, allowed, scratch=True)


def shared_order(item_scores: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """The items `top_k_shared` lists from, best first: score descending, ties to the lower index, NaN, -inf and
    disallowed items left out (as top_k leaves them). Sorting is most of its work: callers with many batches of
    one vector sort it once and pass the order along."""
    s = np.asarray(item_scores)
    if s.ndim != 1:
        raise ValueError("item_scores must be 1-D (items)")
    usable = ~np.isnan(s) & (s != -np.inf)
    mask = allowed_mask(allowed, s.size)
    if mask is not None:
        usable &= mask
    order = np.flatnonzero(usable)
    return order[np.argsort(-s[order], kind="stable")]


def top_k_shared(
    item_scores: np.ndarray,
    n_rows: int,
    k: int,
    exclude: sp.spmatrix | None = None,
    allowed: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """`top_k` of `n_rows` rows that all hold `item_scores` (a popularity list), without building them.

    A row's k best are the first k of the vector's `shared_order` (given as `order`, or sorted here from
    `item_scores` and `allowed`) that its `exclude` row does not hold, and those lie among the first k + (its
    excluded count) of the order. The same lists as `top_k` on the broadcast rows, in O(k + seen) a row instead of
    O(items).
    """
    s = np.asarray(item_scores)
    if s.ndim != 1:
        raise ValueError("item_scores must be 1-D (items)")
    n_items = s.size
    if k <= 0 or n_rows == 0:
        return np.full((n_rows, max(k, 0)), -1, dtype=np.int64)
    if order is None:
        order = shared_order(s, allowed)
    excl = sp.csr_matrix(exclude) if exclude is not None else sp.csr_matrix((n_rows, n_items), dtype=bool)
    if excl.shape != (n_rows, n_items):
        raise ValueError(f"exclude has shape {excl.shape}, expected {(n_rows, n_items)}")
    coo = excl.tocoo()
    nonzero = coo.data != 0
    excluded_rows, excluded_cols = coo.row[nonzero], coo.col[nonzero]
    width = min(order.size, k + int(np.bincount(excluded_rows, minlength=n_rows).max(initial=0)))
    head = order[:width]
    rank = np.full(n_items, -1, dtype=np.int64)
    rank[head] = np.arange(width)
    at = rank[excluded_cols]
    blocked = np.zeros((n_rows, width), dtype=bool)
    blocked[excluded_rows[at >= 0], at[at >= 0]] = True
    rows, cols = np.nonzero(~blocked)  # row by row, each row's free positions in order
    return first_k_per_row(rows, head[cols], n_rows, k)


def first_k_per_row(rows: np.ndarray, items: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """Rows x k: each row's first k `items`, from (row, item) pairs sorted by row and best first within it; -1 pads
    a row with fewer (the lists `top_k_shared` and the blend search's pool build)."""
    within = np.arange(rows.size) - np.searchsorted(rows, rows)  # position among its row's pairs
    keep = within < k
    lists = np.full((n_rows, k), -1, dtype=np.int64)
    lists[rows[keep], within[keep]] = items[keep]
    return lists


def _top_k(
    scores: np.ndarray, k: int, exclude: sp.spmatrix | None, allowed: np.ndarray | None, scratch: bool
) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError("scores must be 2-D (shoppers x items)")
    n_rows, n_items = scores.shape
    if k <= 0 or n_rows == 0:
        return np.full((n_rows, max(k, 0)), -1, dtype=np.int64)
    mask = allowed_mask(allowed, n_items)
    # Disallowed columns are set to -inf by index: cheaper than a masked copy over the block at any share
    # (a masked copyto branches per cell; measured in docs/benchmarks.md, "Precompute from a trained model").
    disallowed = np.flatnonzero(~mask) if mask is not None else None
    excl = sp.csr_matrix(exclude) if exclude is not None else None
    if excl is not None and excl.shape != scores.shape:
        raise ValueError(f"exclude has shape {excl.shape}, scores {scores.shape}")
    result = np.full((n_rows, k), -1, dtype=np.int64)
    block = max(1, TOP_K_BLOCK_CELLS // max(n_items, 1))
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        part = None if excl is None else excl[start:stop]
        result[start:stop] = _top_k_block(scores[start:stop], k, part, disallowed, scratch)
    return result


def _top_k_block(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None, disallowed: np.ndarray | None, scratch: bool
) -> np.ndarray:
    n_rows, n_items = scores.shape
    if n_items == 0:
        return np.full((n_rows, k), -1, dtype=np.int64)
    if scratch and scores.dtype in (np.float32, np.float64) and scores.flags.writeable:
        s = scores
    else:
        s = np.array(scores, dtype=np.float32 if scores.dtype == np.float32 else np.float64, copy=True)
    if np.isnan(np.min(s)):  # min propagates NaN: one reduction, no boolean block unless there is a NaN
        np.copyto(s, -np.inf, where=np.isnan(s))
    if disallowed is not None and disallowed.size:
        s[:, disallowed] = -np.inf
    if exclude is not None and exclude.nnz:
        coo = exclude.tocoo()
        nonzero = coo.data != 0
        s[coo.row[nonzero], coo.col[nonzero]] = -np.inf
    kk = min(k, n_items)
    picked = _best_columns(s, kk)
    picked[np.take_along_axis(s, picked, axis=1) == -np.inf] = -1
    if kk == k:
        return picked
    out = np.full((n_rows, k), -1, dtype=np.int64)
    out[:, :kk] = picked
    return out


# A row whose cells at or above its lower bound (below) number at most this many (or n_items // 16) is ranked by one
# sort of those cells; busier rows (most cells equal: an all-zero history, a catalog of tied priors) by partition.
FEW_CANDIDATES_PER_K = 64
FOLD_WIDTH = 4096  # cells of the slice `_group_maxima` folds a long row onto


def _best_columns(s: np.ndarray, kk: int) -> np.ndarray:
    """Per row the kk best columns, best first, ties to the lower column.

    np.partition is ten to thirty times slower on rows where most cells are equal (item-kNN's zeros, -inf masks)
    than on distinct values, and those rows are the common case for sparse scorers. Instead: the smallest maximum
    of kk strided column groups is a lower bound on the kk-th best (each group holds a distinct cell), usually
    leaving a few dozen cells a row to sort; rows where it leaves many fall back to a tie-free partition.
    """
    n_rows, n_items = s.shape
    bound = _group_maxima(s, kk).min(axis=1)
    above = s >= bound[:, None]
    counts = above.sum(axis=1, dtype=np.int64)
    few = counts <= max(FEW_CANDIDATES_PER_K * kk, n_items // 16)
    picked = np.empty((n_rows, kk), dtype=np.int64)
    if few.any():
        rows = np.flatnonzero(few)
        flat = np.flatnonzero(above[rows] if rows.size < n_rows else above)
        r = flat // n_items
        c = flat - r * n_items
        order = np.lexsort((c, -s[rows[r], c], r))  # by row, then score descending, then column
        starts = np.concatenate([[0], np.cumsum(counts[rows])[:-1]])
        picked[rows] = c[order][starts[:, None] + np.arange(kk)]
    many = np.flatnonzero(~few)
    if many.size:
        picked[many] = _best_columns_by_keys(s[many], kk)
    return picked


def _group_maxima(s: np.ndarray, kk: int) -> np.ndarray:
    """Per row, the maximum of each of kk column groups (column c in group c mod kk; the last n_items mod kk
    columns in none): rows x kk.

    Reducing a rows x groups x kk view over its middle axis walks memory in strides of kk cells and took three
    quarters of top_k's time on a 200,000-item row; folding the row onto one FOLD_WIDTH-cell slice by elementwise
    maximum first (contiguous, the same groups since the width is a multiple of kk) leaves that walk a small slice.
    """
    n_rows, n_items = s.shape
    used = (n_items // kk) * kk
    width = kk * max(1, FOLD_WIDTH // kk)
    if used < 2 * width:
        return s[:, :used].reshape(n_rows, used // kk, kk).max(axis=1)
    folded = s[:, :width].copy()
    for start in range(width, used, width):
        stop = min(start + width, used)
        np.maximum(folded[:, : stop - start], s[:, start:stop], out=folded[:, : stop - start])
    return folded.reshape(n_rows, width // kk, kk).max(axis=1)


def _best_columns_by_keys(s: np.ndarray, kk: int) -> np.ndarray:
    """`_best_columns` for rows with many ties: each cell's score and column packed into one distinct int64 key
    (score bits made order-preserving, -0.0 equal to 0.0; lower column wins a tie), so partition meets no ties."""
    n_rows, n_items = s.shape
    if s.dtype != np.float32:  # 64 score bits leave no room for the column
        return _best_columns_exact(s, kk)
    key = s.view(np.int32).astype(np.int64)
    negative = key < 0
    np.bitwise_xor(key, 0x7FFFFFFF, out=key, where=negative)
    np.add(key, 1, out=key, where=negative)
    key <<= 32
    key |= n_items - 1 - np.arange(n_items, dtype=np.int64)
    cut = np.partition(key, n_items - kk, axis=1)[:, n_items - kk][:, None]
    flat = np.flatnonzero(key >= cut)  # exactly kk a row: keys are distinct
    cols = flat.reshape(n_rows, kk) - (np.arange(n_rows, dtype=np.int64) * n_items)[:, None]
    order = np.argsort(-np.take_along_axis(key, cols, axis=1), axis=1)
    return np.take_along_axis(cols, order, axis=1)


def _best_columns_exact(s: np.ndarray, kk: int) -> np.ndarray:
    """`_best_columns` by partition on the scores themselves (float64 rows with many ties)."""
    n_rows, n_items = s.shape
    threshold = np.partition(s, n_items - kk, axis=1)[:, n_items - kk][:, None]
    chosen = s >= threshold
    tied = np.flatnonzero(chosen.sum(axis=1, dtype=np.int64) > kk)
    if tied.size:
        sub, sub_threshold = s[tied], threshold[tied]
        above, at = sub > sub_threshold, sub == sub_threshold
        need = kk - above.sum(axis=1, dtype=np.int64)
        chosen[tied] = above | (at & (np.cumsum(at, axis=1, dtype=np.int32) <= need[:, None]))
    flat = np.flatnonzero(chosen)
    cols = flat.reshape(n_rows, kk) - (np.arange(n_rows, dtype=np.int64) * n_items)[:, None]
    order = np.argsort(-np.take_along_axis(s, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """keys ∈ sorted_keys, elementwise (a vectorized isin on pre-sorted keys)."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[pos] == keys


@dataclass
class TargetBatch:
    """One batch's targets as sorted (row * n_items + item) keys, so many lists can be checked against them."""

    keys: np.ndarray
    cold_keys: np.ndarray
    n_targets: np.ndarray  # per row
    n_cold: np.ndarray  # per row

    @classmethod
    def build(cls, targets: Sequence[np.ndarray], n_items: int, is_cold: np.ndarray) -> TargetBatch:
        rows = len(targets)
        parts = [np.asarray(t, dtype=np.int64) + row * n_items for row, t in enumerate(targets)]
        keys = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        cold_keys = keys[is_cold[keys % n_items]]
        return cls(
            keys=keys,
            cold_keys=cold_keys,
            n_targets=np.bincount(keys // n_items, minlength=rows),
            n_cold=np.bincount(cold_keys // n_items, minlength=rows),
        )


class MetricAccumulator:
    """Collects per-shopper metrics over batches of top-k lists; `result()` averages them.

    NDCG: binary gain 1/log2(rank+1) over the ideal for min(k, targets). Recall: hits / min(k, targets).
    HR: any hit. MRR: 1/rank of the first hit. Cold recall: the same recall over shoppers with targets among
    the cold items, counting only those. Coverage: distinct recommended items / `n_allowed`.
    Shoppers without targets are skipped (an `EvalSet` from `temporal_split` has none). Sums are exact
    (math.fsum), so any batch size gives identical results.
    """

    def __init__(self, k: int, n_items: int, n_allowed: int, cold_items: np.ndarray | None = None) -> None:
        self.k = k
        self.n_items = n_items
        self.n_allowed = n_allowed
        self.discount = 1.0 / np.log2(np.arange(2, k + 2))
        self.ideal = np.cumsum(self.discount)
        self.is_cold = np.zeros(n_items, dtype=bool)
        if cold_items is not None and len(cold_items):
            self.is_cold[np.asarray(cold_items, dtype=np.int64)] = True
        self.recommended = np.zeros(n_items, dtype=bool)
        self.values: dict[str, list[np.ndarray]] = {key: [] for key in ("ndcg", "recall", "hr", "mrr", "cold_recall")}

    def prepare(self, targets: Sequence[np.ndarray]) -> TargetBatch:
        return TargetBatch.build(targets, self.n_items, self.is_cold)

    def add(self, lists: np.ndarray, targets: Sequence[np.ndarray] | TargetBatch) -> None:
        """One batch: `lists` (shoppers x k item indices, -1 = none) and each shopper's target items."""
        batch = targets if isinstance(targets, TargetBatch) else self.prepare(targets)
        lists = np.asarray(lists, dtype=np.int64)
        valid = lists >= 0
        self.recommended[lists[valid]] = True
        keys = np.arange(lists.shape[0], dtype=np.int64)[:, None] * self.n_items + lists
        hit = _member(keys, batch.keys) & valid
        n_hits = hit.sum(axis=1)
        has = batch.n_targets > 0
        best = np.minimum(self.k, np.maximum(batch.n_targets, 1))
        dcg = hit.astype(np.float64) @ self.discount[: lists.shape[1]]
        first = np.argmax(hit, axis=1)
        self.values["ndcg"].append((dcg / self.ideal[best - 1])[has])
        self.values["recall"].append((n_hits / best)[has])
        self.values["hr"].append((n_hits > 0)[has].astype(np.float64))
        self.values["mrr"].append(np.where(n_hits > 0, 1.0 / (first + 1), 0.0)[has])
        has_cold = batch.n_cold > 0
        cold_hits = (_member(keys, batch.cold_keys) & valid).sum(axis=1)
        self.values["cold_recall"].append((cold_hits / np.minimum(self.k, np.maximum(batch.n_cold, 1)))[has_cold])

    def per_shopper(self, key: str = "ndcg") -> np.ndarray:
        """Each scored shopper's value of `key`, in evaluation order: what paired comparisons need."""
        return np.concatenate(self.values[key]) if self.values[key] else np.zeros(0)

    def result(self) -> dict[str, float]:
        def mean(key: str) -> tuple[float, int]:
            values = np.concatenate(self.values[key]) if self.values[key] else np.zeros(0)
            return (math.fsum(values.tolist()) / values.size if values.size else 0.0), int(values.size)

        out = {key: mean(key)[0] for key in ("ndcg", "recall", "hr", "mrr")}
        out["coverage"] = float(self.recommended.sum() / self.n_allowed) if self.n_allowed else 0.0
        out["cold_recall"] = mean("cold_recall")[0]
        out["n_shoppers"] = float(mean("hr")[1])
        return out


# A batch's dense scores (shoppers x items) stay under this many cells: 1,000 shoppers of a 5,000-item shop, but 125
# of a 200,000-item one, whose 1,000 x 200,000 float32 block alone was 800 MB (and a candidate's temporaries more).
EVAL_BLOCK_CELLS = 25_000_000


def eval_batches(evalset: EvalSet, batch_size: int) -> Iterator[tuple[np.ndarray, Interactions, sp.csr_matrix]]:
    """(shopper codes, their history renumbered 0.., seen mask) per batch: what every scorer of `evalset` needs.

    At most `batch_size` shoppers, fewer in a big catalog (EVAL_BLOCK_CELLS); the metrics do not depend on it.
    """
    rows = max(1, min(batch_size, EVAL_BLOCK_CELLS // max(evalset.history.n_items, 1)))
    for start in range(0, evalset.n_shoppers, rows):
        codes = np.arange(start, min(start + rows, evalset.n_shoppers))
        history = evalset.history.select(codes)
        yield codes, history, history.seen()


def evaluate_scores(
    score_fn: ScoreFn | np.ndarray,
    evalset: EvalSet,
    k: int = 10,
    allowed: np.ndarray | None = None,
    batch_size: int = 1000,
) -> dict[str, float]:
    """`evaluate` for a bare scorer: a callable history -> scores (a new array each call, which the ranking may
    overwrite, as Recommender.score returns), or precomputed scores for all of `evalset`."""
    return _accumulate(score_fn, evalset, k, allowed, batch_size).result()


def _accumulate(
    score_fn: Recommender | ScoreFn | np.ndarray,
    evalset: EvalSet,
    k: int,
    allowed: np.ndarray | None,
    batch_size: int,
) -> MetricAccumulator:
    """Rank each batch and add it up; a recommender whose scores every shopper shares is ranked without them."""
    n_items = evalset.history.n_items
    mask = allowed_mask(allowed, n_items)
    n_allowed = int(mask.sum()) if mask is not None else n_items
    acc = MetricAccumulator(k, n_items, n_allowed, evalset.cold_items)
    shared = None
    if isinstance(score_fn, Recommender):
        shared = score_fn.shared_scores()
        score_fn = score_fn.score
    order = shared_order(shared, mask) if shared is not None else None
    for codes, history, seen in eval_batches(evalset, batch_size):
        targets = [evalset.targets[c] for c in codes]
        if shared is not None:
            acc.add(top_k_shared(shared, codes.size, k, exclude=seen, order=order), targets)
            continue
        scores = score_fn(history) if callable(score_fn) else np.asarray(score_fn)[codes]
        # Either way the batch's scores are a new array (Recommender.score's contract; indexing copies), so ranking
        # may mask them in place: a wide catalog's batch is 100 MB a copy.
        acc.add(top_k_scratch(scores, k, exclude=seen, allowed=mask), targets)
    return acc


def evaluate_paired(
    recommender: Recommender,
    evalset: EvalSet,
    k: int = 10,
    allowed: np.ndarray | None = None,
    batch_size: int = 1000,
) -> tuple[dict[str, float], np.ndarray]:
    """`evaluate`, and each shopper's NDCG@k in evaluation order, so two models on one set compare pairwise."""
    acc = _accumulate(recommender, evalset, k, allowed, batch_size)
    return acc.result(), acc.per_shopper("ndcg")


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b over the same shoppers and its standard error (sd of the differences / sqrt(n)).

    Paired, because the shoppers a set holds differ far more from each other than two models do on one shopper:
    the error of the difference is then much smaller than either mean's own.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same shoppers: {a.shape} vs {b.shape}")
    diff = a - b
    if diff.size == 0:
        return 0.0, 0.0
    se = float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()), se


def evaluate(
    recommender: Recommender,
    evalset: EvalSet,
    k: int = 10,
    allowed: np.ndarray | None = None,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Metrics@k of `recommender` on `evalset`: keys METRIC_KEYS, each shopper's history items masked."""
    return _accumulate(recommender, evalset, k, allowed, batch_size).result()
