"""Ranking metrics on a 3-shopper fixture whose answers are worked out by hand, and top_k's tie and mask rules."""

from __future__ import annotations

from math import log2
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommendations.engine import metrics
from recommendations.engine.base import EVENT_TYPE_CODES, EvalSet, Interactions, ItemFeatures, Recommender
from recommendations.engine.metrics import (
    METRIC_KEYS,
    evaluate,
    evaluate_paired,
    evaluate_scores,
    top_k,
    top_k_scratch,
    top_k_shared,
)

# Shopper s saw item s; these are the scores each gets (a "recommender" keyed on that one history item).
SCORES = np.array(
    [
        [9, 1, 5, 8, 0, 2],  # seen 0 -> top3 [3, 2, 5]
        [4, 9, 4, 1, 4, 0],  # seen 1 -> top3 [0, 2, 4] (ties by index); without item 4: [0, 2, 3]
        [0, 0, 7, 1, 0, 3],  # seen 2 -> top3 [5, 3, 0]
    ],
    dtype=np.float32,
)
TARGETS = [np.array([1, 2]), np.array([3, 5]), np.array([5])]
COLD = np.array([5], dtype=np.int32)


def _evalset() -> EvalSet:
    n = 3
    history = Interactions(
        n_shoppers=n,
        n_items=6,
        shopper=np.arange(n, dtype=np.int32),
        item=np.arange(n, dtype=np.int32),
        event_type=np.full(n, EVENT_TYPE_CODES["view"], dtype=np.int8),
        weight=np.ones(n, dtype=np.float32),
        age_days=np.ones(n, dtype=np.float32),
    )
    return EvalSet(history=history, targets=TARGETS, cold_items=COLD)


class ByHistoryItem(Recommender):
    """Scores a shopper with the SCORES row of the one item in their history (renumbered batches stay right)."""

    name = "by_history_item"

    def fit(self, train, features, validation=None, on_progress=None):
        return {}

    def score(self, history: Interactions) -> np.ndarray:
        out = np.zeros((history.n_shoppers, history.n_items), dtype=np.float32)
        out[history.shopper] = SCORES[history.item]
        return out

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> Recommender:
        raise NotImplementedError


def test_metrics_match_hand_computed_values():
    result = evaluate(ByHistoryItem(), _evalset(), k=3)
    assert set(result) == set(METRIC_KEYS)
    # s0: hit (item 2) at rank 2 of 2 targets; s1: no hit; s2: hit (item 5) at rank 1.
    ndcg_s0 = (1 / log2(3)) / (1 + 1 / log2(3))
    assert result["ndcg"] == pytest.approx((ndcg_s0 + 0 + 1) / 3)
    assert result["recall"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert result["hr"] == pytest.approx(2 / 3)
    assert result["mrr"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert result["coverage"] == pytest.approx(5 / 6)  # items {0, 2, 3, 4, 5}
    assert result["cold_recall"] == pytest.approx((0 + 1) / 2)  # s1 and s2 have cold target 5; only s2 gets it
    assert result["n_shoppers"] == 3


def test_allowed_items_change_lists_and_coverage():
    allowed = np.array([True, True, True, True, False, True])
    result = evaluate(ByHistoryItem(), _evalset(), k=3, allowed=allowed)
    # s1's list becomes [0, 2, 3]: target 3 at rank 3.
    ndcg_s0 = (1 / log2(3)) / (1 + 1 / log2(3))
    ndcg_s1 = (1 / log2(4)) / (1 + 1 / log2(3))
    assert result["ndcg"] == pytest.approx((ndcg_s0 + ndcg_s1 + 1) / 3)
    assert result["recall"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert result["hr"] == pytest.approx(1.0)
    assert result["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert result["coverage"] == pytest.approx(4 / 5)  # {0, 2, 3, 5} of 5 allowed items
    assert result["cold_recall"] == pytest.approx(0.5)
    # Index arrays mean the same as masks.
    assert evaluate(ByHistoryItem(), _evalset(), k=3, allowed=np.flatnonzero(allowed)) == result


def test_batches_callables_and_cached_scores_agree():
    evalset = _evalset()
    reference = evaluate(ByHistoryItem(), evalset, k=3)
    assert evaluate(ByHistoryItem(), evalset, k=3, batch_size=1) == reference
    assert evaluate_scores(ByHistoryItem().score, evalset, k=3, batch_size=2) == reference
    assert evaluate_scores(SCORES, evalset, k=3, batch_size=2) == reference


def test_recall_divides_by_k_when_targets_exceed_it():
    evalset = _evalset()
    evalset.targets = [np.array([1, 2, 3, 4, 5]), np.array([3]), np.array([4])]
    result = evaluate_scores(SCORES, evalset, k=2)
    # Lists: s0 [3, 2] (2 hits of min(2, 5)), s1 [0, 2], s2 [5, 3].
    assert result["recall"] == pytest.approx((1 + 0 + 0) / 3)
    assert result["ndcg"] == pytest.approx(1 / 3)
    assert result["cold_recall"] == pytest.approx(0.0)  # s0 has cold target 5 and misses it


def test_no_cold_targets_and_shoppers_without_targets():
    evalset = _evalset()
    evalset.cold_items = np.zeros(0, dtype=np.int32)
    evalset.targets = [np.array([3]), np.zeros(0, dtype=np.int64), np.array([5])]
    result = evaluate_scores(SCORES, evalset, k=1)
    assert result["cold_recall"] == 0.0
    assert result["n_shoppers"] == 2  # the shopper without targets is not counted
    assert result["hr"] == pytest.approx(1.0)  # s0's top1 is 3, s2's is 5


def test_top_k_ties_break_by_item_index_and_masks_never_appear():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]], dtype=np.float32)
    assert top_k(scores, 3, None, None).tolist() == [[1, 2, 4], [0, 1, 2]]
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]))
    allowed = np.array([True, True, True, True, False])
    assert top_k(scores, 3, exclude, allowed).tolist() == [[2, 0, 3], [1, 2, 3]]
    # Fewer eligible items than k: the rest is -1, never an excluded or disallowed item.
    assert top_k(scores, 6, exclude, allowed).tolist() == [[2, 0, 3, -1, -1, -1], [1, 2, 3, -1, -1, -1]]


def test_top_k_matches_a_full_sort_on_random_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=(40, 200)).astype(np.float32)
    scores[5] = 0.0
    exclude = sp.random(40, 200, density=0.1, format="csr", random_state=4)
    allowed = rng.random(200) < 0.7
    got = top_k(scores, 15, exclude, allowed)
    for row in range(40):
        masked = scores[row].astype(np.float64)
        masked[~allowed] = -np.inf
        masked[exclude[row].indices] = -np.inf
        expected = np.lexsort((np.arange(200), -masked))[:15]
        assert got[row].tolist() == expected.tolist()


def _full_sort(scores: np.ndarray, k: int, exclude: sp.spmatrix | None, allowed: np.ndarray | None) -> np.ndarray:
    """top_k's rule spelled out: NaN, excluded and disallowed are -inf; best first, lower index first on ties;
    -inf never listed (-1 pads)."""
    n_rows, n_items = scores.shape
    masked = scores.astype(np.float64)
    masked[np.isnan(masked)] = -np.inf
    if allowed is not None:
        masked[:, ~metrics.allowed_mask(allowed, n_items)] = -np.inf
    if exclude is not None:
        rows, cols = sp.csr_matrix(exclude).nonzero()
        masked[rows, cols] = -np.inf
    out = np.full((n_rows, k), -1, dtype=np.int64)
    for row in range(n_rows):
        order = np.lexsort((np.arange(n_items), -masked[row]))[:k]
        order = order[masked[row, order] > -np.inf]
        out[row, : order.size] = order
    return out


def _awkward_scores(rng: np.random.Generator, n_rows: int, n_items: int) -> np.ndarray:
    """Few distinct values (ties everywhere, also at the k-th place), NaN, ±inf, an all -inf and an all-NaN row."""
    scores = rng.integers(0, 5, size=(n_rows, n_items)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.05] = np.nan
    scores[rng.random(scores.shape) < 0.02] = np.inf
    scores[rng.random(scores.shape) < 0.05] = -np.inf
    scores[1] = -np.inf
    scores[2] = np.nan
    scores[3] = 7.0  # one value across the row: k of n_items tied at the threshold
    return scores


def test_top_k_ties_at_the_threshold_go_to_the_lower_item_index():
    scores = np.array(
        [
            [5, 1, 3, 3, 0, 3, 3, 2],  # top 3: 0, then two of the four 3s -> 2, 3
            [0, 9, 8, 7, 6, 5, 4, 3],  # no tie: 1, 2, 3
            [2, 2, 2, 2, 2, 2, 2, 2],  # all tied: 0, 1, 2
            [1, 4, 4, 0, 4, 4, 9, 4],  # 6, then the lowest two 4s -> 1, 2
        ],
        dtype=np.float32,
    )
    expected = [[0, 2, 3], [1, 2, 3], [0, 1, 2], [6, 1, 2]]
    assert top_k(scores, 3).tolist() == expected
    assert top_k_scratch(scores.copy(), 3).tolist() == expected


def test_top_k_rows_without_enough_items_pad_with_minus_one():
    scores = np.array(
        [
            [-np.inf, -np.inf, -np.inf, -np.inf],  # nothing to list
            [np.nan, np.nan, np.nan, np.nan],  # NaN counts as excluded
            [np.nan, 1.0, -np.inf, 2.0],  # two items only
            [np.inf, 1.0, np.inf, 0.0],  # +inf is the best score, not an exclusion
        ],
        dtype=np.float32,
    )
    assert top_k(scores, 3).tolist() == [[-1, -1, -1], [-1, -1, -1], [3, 1, -1], [0, 2, 1]]
    assert top_k(scores, 6).tolist() == [[-1] * 6, [-1] * 6, [3, 1, -1, -1, -1, -1], [0, 2, 1, 3, -1, -1]]


@pytest.mark.parametrize("share", [0.0, 0.02, 0.3, 0.7, 0.98, 1.0])
def test_top_k_matches_a_full_sort_for_any_share_of_disallowed_items(share):
    rng = np.random.default_rng(int(share * 100))
    scores = _awkward_scores(rng, 30, 120)
    allowed = rng.random(120) >= share
    exclude = sp.random(30, 120, density=0.1, format="csr", random_state=5)
    expected = _full_sort(scores, 10, exclude, allowed)
    assert top_k(scores, 10, exclude, allowed).tolist() == expected.tolist()
    # The same mask given as item indices.
    assert top_k(scores, 10, exclude, np.flatnonzero(allowed)).tolist() == expected.tolist()


def test_top_k_over_several_blocks_matches_a_full_sort(monkeypatch):
    monkeypatch.setattr(metrics, "TOP_K_BLOCK_CELLS", 7 * 50)  # 7 rows per block: the last block is short
    rng = np.random.default_rng(11)
    scores = _awkward_scores(rng, 45, 50)
    exclude = sp.random(45, 50, density=0.2, format="csr", random_state=6)
    allowed = rng.random(50) >= 0.1
    expected = _full_sort(scores, 8, exclude, allowed)
    assert top_k(scores, 8, exclude, allowed).tolist() == expected.tolist()
    assert top_k_scratch(scores.copy(), 8, exclude, allowed).tolist() == expected.tolist()


@pytest.mark.parametrize("few_per_k", [0, metrics.FEW_CANDIDATES_PER_K])  # 0: every busy row takes the key path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_k_on_sparse_scores_matches_a_full_sort_on_either_path(monkeypatch, few_per_k, dtype):
    # Item-kNN's shape: mostly zeros (and -0.0, which ties with 0.0), a few positive and negative scores, rows
    # with fewer non-zero scores than k, an all-zero row: the cases where the lower bound leaves many cells.
    monkeypatch.setattr(metrics, "FEW_CANDIDATES_PER_K", few_per_k)
    rng = np.random.default_rng(21)
    scores = np.zeros((60, 400), dtype=dtype)
    filled = rng.random(scores.shape) < 0.04
    scores[filled] = rng.normal(size=int(filled.sum())).round(1)
    scores[rng.random(scores.shape) < 0.2] = -0.0
    scores[7:9] = 0.0
    scores[8, :3] = [2.0, 1.0, 3.0]
    exclude = sp.random(60, 400, density=0.02, format="lil", random_state=8)
    exclude[7:9] = 0  # rows 7 and 8 checked by hand below
    expected = _full_sort(scores, 12, exclude, None)
    assert top_k(scores, 12, exclude).tolist() == expected.tolist()
    assert expected[7].tolist() == list(range(12)) and expected[8][:3].tolist() == [2, 0, 1]


@pytest.mark.parametrize("n_items", [39, 40, 97, 160, 1003])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_folded_group_maxima_are_the_strided_groups_maxima(monkeypatch, n_items, k):
    # A fold width of 16 cells (a multiple of k rounded down) makes every long row fold, with a short last slice
    # where n_items is not a multiple of the width: the groups must still be exactly "column mod k".
    monkeypatch.setattr(metrics, "FOLD_WIDTH", 16)
    rng = np.random.default_rng(n_items * 10 + k)
    scores = _awkward_scores(rng, 9, n_items)
    scores[np.isnan(scores)] = -np.inf  # top_k has replaced NaN before it asks for the bound
    used = (n_items // k) * k
    expected = scores[:, :used].reshape(9, used // k, k).max(axis=1)
    assert np.array_equal(metrics._group_maxima(scores, k), expected)
    expected_lists = _full_sort(scores, k, None, None)
    assert top_k(scores, k).tolist() == expected_lists.tolist()


def test_top_k_leaves_scores_alone_and_scratch_changes_only_masked_cells():
    rng = np.random.default_rng(12)
    scores = _awkward_scores(rng, 20, 60)
    exclude = sp.random(20, 60, density=0.1, format="csr", random_state=7)
    allowed = rng.random(60) >= 0.2
    before = scores.copy()
    expected = top_k(scores, 12, exclude, allowed)
    np.testing.assert_array_equal(scores, before)  # top_k copies

    scratch = scores.copy()
    assert top_k_scratch(scratch, 12, exclude, allowed).tolist() == expected.tolist()
    masked = np.isnan(before) | ~allowed[None, :] | (exclude.toarray() != 0)
    np.testing.assert_array_equal(scratch[~masked], before[~masked])  # everything else is the caller's
    assert (scratch[masked] == -np.inf).all()
    rows, cols = np.nonzero(expected >= 0)
    np.testing.assert_array_equal(scratch[rows, expected[rows, cols]], before[rows, expected[rows, cols]])


def test_top_k_scratch_on_a_view_or_another_dtype_gives_the_same_lists():
    rng = np.random.default_rng(13)
    scores = _awkward_scores(rng, 16, 40)
    allowed = rng.random(40) >= 0.25
    expected = _full_sort(scores, 9, None, allowed).tolist()
    wide = np.full((16, 80), -7.0, dtype=np.float32)
    wide[:, ::2] = scores  # a strided, writeable view
    assert top_k_scratch(wide[:, ::2], 9, allowed=allowed).tolist() == expected
    assert top_k_scratch(np.asfortranarray(scores), 9, allowed=allowed).tolist() == expected
    assert top_k_scratch(scores.astype(np.float64), 9, allowed=allowed).tolist() == expected
    assert top_k(np.where(np.isnan(scores), -np.inf, scores).astype(np.float16), 9, allowed=allowed).tolist() == (
        expected
    )


def test_a_big_catalog_is_scored_in_fewer_shoppers_a_batch_with_the_same_metrics(monkeypatch):
    """A batch's dense scores stay under EVAL_BLOCK_CELLS (200,000 items: 125 shoppers, not 1,000 x 800 MB)."""
    evalset = _evalset()
    reference = evaluate(ByHistoryItem(), evalset, k=3)
    n_items = evalset.history.n_items
    monkeypatch.setattr(metrics, "EVAL_BLOCK_CELLS", n_items)  # one shopper's row per batch
    sizes = [len(codes) for codes, _history, _seen in metrics.eval_batches(evalset, 1000)]
    assert sizes == [1] * evalset.n_shoppers
    assert evaluate(ByHistoryItem(), evalset, k=3) == reference


@pytest.mark.parametrize("seed", range(6))
def test_top_k_shared_is_top_k_of_the_broadcast_rows(seed):
    """Ties (to the lower index), NaN, ±inf, -0.0, disallowed items, explicit zeros in `exclude` (which exclude
    nothing) and rows that exclude most of the catalog: the same lists as ranking every row."""
    rng = np.random.default_rng(seed)
    n_rows, n_items = 25, 70
    scores = _awkward_scores(rng, 4, n_items)[0]
    scores[rng.random(n_items) < 0.1] = -0.0
    dense = (rng.random((n_rows, n_items)) < 0.15).astype(np.float32)
    dense[3] = 1.0  # a row that has seen everything
    dense[4, :60] = 1.0
    exclude = sp.csr_matrix(dense)
    exclude.data[::7] = 0.0  # stored zeros
    allowed = rng.random(n_items) >= 0.2 if seed % 2 else None
    data = exclude.data.copy()
    for k in (1, 10, n_items + 5):
        expected = top_k(np.broadcast_to(scores, (n_rows, n_items)), k, exclude, allowed)
        assert top_k_shared(scores, n_rows, k, exclude, allowed).tolist() == expected.tolist()
        order = metrics.shared_order(scores, allowed)  # sorted once, as evaluation and precompute do
        assert top_k_shared(scores, n_rows, k, exclude, order=order).tolist() == expected.tolist()
    np.testing.assert_array_equal(exclude.data, data)  # the caller's mask is left as it was
    assert top_k_shared(scores, n_rows, 5).tolist() == top_k(np.broadcast_to(scores, (n_rows, n_items)), 5).tolist()


class SameForEveryone(Recommender):
    """One vector for every shopper: ranked by top_k_shared when it says so, by its broadcast rows otherwise."""

    name = "same_for_everyone"

    def __init__(self, vector: np.ndarray, shares: bool) -> None:
        super().__init__()
        self.vector, self.shares = vector, shares

    def fit(self, train, features, validation=None, on_progress=None):
        return {}

    def score(self, history: Interactions) -> np.ndarray:
        return np.broadcast_to(self.vector, (history.n_shoppers, self.vector.size)).copy()

    def shared_scores(self) -> np.ndarray | None:
        return self.vector if self.shares else None

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> Recommender:
        raise NotImplementedError


def test_a_shared_score_vector_evaluates_as_its_broadcast_rows(monkeypatch):
    evalset = _evalset()
    vector = np.array([3, 3, 1, 5, np.nan, 1], dtype=np.float32)
    allowed = np.array([True, True, True, True, True, False])
    monkeypatch.setattr(metrics, "EVAL_BLOCK_CELLS", 2 * evalset.history.n_items)  # two shoppers a batch
    for kwargs in ({"k": 3}, {"k": 2, "allowed": allowed}):
        fast, per_shopper = evaluate_paired(SameForEveryone(vector, shares=True), evalset, **kwargs)
        slow, slow_per_shopper = evaluate_paired(SameForEveryone(vector, shares=False), evalset, **kwargs)
        assert fast == slow
        np.testing.assert_array_equal(per_shopper, slow_per_shopper)
    # By hand: the order is 3, 0, 1 (ties to the lower index), 2, 5, never the NaN item 4; shopper s saw item s.
    seen = sp.identity(3, format="csr")
    seen.resize(3, 6)
    assert top_k_shared(vector, 3, 3, exclude=seen).tolist() == [[3, 1, 2], [3, 0, 2], [3, 0, 1]]
