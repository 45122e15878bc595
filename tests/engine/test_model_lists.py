"""recommend_chunks: each shopper's list and reasons, checked against the rule written out one item at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommendations.engine import model_lists
from recommendations.engine.base import EVENT_TYPE_CODES, Interactions, ItemFeatures, Recommender

N_SHOPPERS, N_ITEMS, N_CATEGORIES = 23, 40, 5


class TableScores(Recommender):
    """A shopper's scores are the sum of TABLE rows of the items in their history: small integers (ties at
    every rank, exact in float32 whatever the batch), with NaN and ±inf cells, so top_k's rules all show."""

    name = "table_scores"

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = table

    def fit(self, train, features, validation=None, on_progress=None):
        return {}

    def score(self, history: Interactions) -> np.ndarray:
        out = np.zeros((history.n_shoppers, history.n_items), dtype=np.float32)
        with np.errstate(invalid="ignore"):  # inf + -inf is NaN, on purpose
            np.add.at(out, history.shopper, self.table[history.item])
        return out

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> Recommender:
        raise NotImplementedError


def _shop(seed: int) -> tuple[Interactions, np.ndarray, TableScores, sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, size=N_SHOPPERS)
    counts[0] = 0  # a shopper without history: no reasons
    shopper = np.repeat(np.arange(N_SHOPPERS, dtype=np.int32), counts)
    item = rng.integers(0, N_ITEMS, size=shopper.size).astype(np.int32)  # oldest first within a shopper
    interactions = Interactions(
        n_shoppers=N_SHOPPERS,
        n_items=N_ITEMS,
        shopper=shopper,
        item=item,
        event_type=np.full(shopper.size, EVENT_TYPE_CODES["view"], dtype=np.int8),
        weight=np.ones(shopper.size, dtype=np.float32),
        age_days=np.ones(shopper.size, dtype=np.float32),
    )
    category_of_item = rng.integers(-1, N_CATEGORIES, size=N_ITEMS)  # -1: a product without a category
    table = rng.integers(0, 3, size=(N_ITEMS, N_ITEMS)).astype(np.float32)
    table[rng.random(table.shape) < 0.03] = np.nan
    table[rng.random(table.shape) < 0.03] = np.inf
    table[rng.random(table.shape) < 0.03] = -np.inf
    bought = sp.random(N_SHOPPERS, N_ITEMS, density=0.15, format="csr", random_state=seed)
    bought.data[:] = 1
    allowed = rng.random(N_ITEMS) >= 0.1
    return interactions, category_of_item, TableScores(table), bought, allowed


def _expected(
    model: Recommender,
    interactions: Interactions,
    bought: sp.csr_matrix,
    allowed: np.ndarray,
    n: int,
    category_of_item: np.ndarray,
    shoppers: np.ndarray,
) -> list[model_lists.ShopperRow]:
    """One shopper, one item at a time: top n by score (lower index on ties) among allowed, unbought, non-NaN
    items; -inf and +inf scores left out; the reason is the most recent history item of the item's category
    unless that is the item itself. Shoppers with an empty list have no row."""
    scores = model.score(interactions)
    ptr = interactions.indptr()
    rows = []
    for code in shoppers.tolist():
        row = scores[code].astype(np.float64)
        row[np.isnan(row) | ~allowed] = -np.inf
        row[bought[code].indices] = -np.inf
        top = [i for i in np.lexsort((np.arange(N_ITEMS), -row))[:n].tolist() if row[i] > -np.inf]
        history = interactions.item[ptr[code] : ptr[code + 1]].tolist()
        entries = []
        for i in top:
            if not np.isfinite(scores[code, i]):
                continue
            same = [h for h in history if category_of_item[h] == category_of_item[i]]
            anchor = same[-1] if same and same[-1] != i else -1
            entries.append((i, float(scores[code, i]), anchor))
        if entries:
            rows.append((code, entries))
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [5, 60])  # 60 > items: lists end where the eligible items do
def test_lists_follow_the_item_by_item_rule(monkeypatch, seed, n):
    monkeypatch.setattr(model_lists, "SCORE_CELLS", 4 * N_ITEMS)  # chunks of 4 shoppers, the last one short
    interactions, category_of_item, model, bought, allowed = _shop(seed)
    done = []
    chunks = list(
        model_lists.recommend_chunks(model, interactions, bought, allowed, n, category_of_item, on_chunk=done.append)
    )
    assert len(chunks) == 6 and done == [4, 4, 4, 4, 4, 3]
    got = [row for rows in chunks for row in rows]
    assert got == _expected(model, interactions, bought, allowed, n, category_of_item, np.arange(N_SHOPPERS))
    for code, entries in got:
        assert type(code) is int
        assert all(type(i) is int and type(s) is float and type(a) is int for i, s, a in entries)
    assert any(a >= 0 for _, entries in got for _, _, a in entries)  # the fixture exercises reasons


class SameScores(Recommender):
    """One vector for every shopper (a popularity list), which it hands precompute as its shared scores."""

    name = "same_scores"

    def __init__(self, vector: np.ndarray) -> None:
        super().__init__()
        self.vector = vector

    def fit(self, train, features, validation=None, on_progress=None):
        return {}

    def score(self, history: Interactions) -> np.ndarray:
        return np.broadcast_to(self.vector, (history.n_shoppers, self.vector.size)).copy()

    def shared_scores(self) -> np.ndarray | None:
        return self.vector

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> Recommender:
        raise NotImplementedError


@pytest.mark.parametrize("seed", [0, 1])
def test_a_shared_score_vector_lists_by_the_same_rule(monkeypatch, seed):
    """Popularity's path (one sorted vector walked past each shopper's bought items) gives the lists, scores and
    reasons of the item-by-item rule, ties, NaN and ±inf included, over several chunks."""
    monkeypatch.setattr(model_lists, "SCORE_CELLS", 4 * N_ITEMS)
    interactions, category_of_item, table_model, bought, allowed = _shop(seed)
    vector = table_model.table[seed].copy()
    vector[[3, 5, 7]] = [np.nan, np.inf, -np.inf]
    model = SameScores(vector)
    ranked = []
    monkeypatch.setattr(SameScores, "score", lambda self, history: ranked.append(1) or np.zeros(0))
    got = [
        row
        for rows in model_lists.recommend_chunks(model, interactions, bought, allowed, 12, category_of_item)
        for row in rows
    ]
    assert not ranked  # no shoppers x items copy was scored
    monkeypatch.undo()
    assert got == _expected(model, interactions, bought, allowed, 12, category_of_item, np.arange(N_SHOPPERS))
    assert any(a >= 0 for _, entries in got for _, _, a in entries)


def test_a_shard_lists_only_its_shoppers_in_the_given_order():
    interactions, category_of_item, model, bought, allowed = _shop(3)
    shard = np.array([17, 2, 9, 0, 22])
    got = [
        row
        for rows in model_lists.recommend_chunks(
            model, interactions, bought, allowed, 7, category_of_item, shoppers=shard
        )
        for row in rows
    ]
    assert got == _expected(model, interactions, bought, allowed, 7, category_of_item, shard)


def test_no_exclusions_no_mask_and_an_empty_history():
    interactions, category_of_item, model, _, _ = _shop(4)
    empty = Interactions.empty(N_SHOPPERS, N_ITEMS)
    everything = np.ones(N_ITEMS, dtype=bool)
    nobody_bought = sp.csr_matrix((N_SHOPPERS, N_ITEMS))
    for history in (interactions, empty):
        got = [
            r for rows in model_lists.recommend_chunks(model, history, None, None, 6, category_of_item) for r in rows
        ]
        assert got == _expected(model, history, nobody_bought, everything, 6, category_of_item, np.arange(N_SHOPPERS))
    # No history at all: every score is 0, so each list is the first six items, with no reasons.
    assert got == [(code, [(i, 0.0, -1) for i in range(6)]) for code in range(N_SHOPPERS)]


def test_last_item_per_category_is_the_most_recent_one():
    interactions, category_of_item, _, _, _ = _shop(5)
    n_cat = int(category_of_item.max()) + 2
    last = model_lists.last_item_per_category(interactions, category_of_item)
    ptr = interactions.indptr()
    expected = {}
    for code in range(N_SHOPPERS):
        for item in interactions.item[ptr[code] : ptr[code + 1]].tolist():
            expected[code * n_cat + int(category_of_item[item]) + 1] = item
    assert last == expected
