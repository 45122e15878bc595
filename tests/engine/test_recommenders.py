"""One contract for every recommender (learn a known pattern, save/load without pickle, re-align to a new
catalog by product id), plus what is particular to some: EASE's size limit, recency-weighted history, and the
blend weight search.

To put another recommender through the contract, add one `Candidate` line to CANDIDATES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from recommendations.engine.base import EVENT_TYPE_CODES, Interactions, ItemFeatures, Recommender
from recommendations.engine.baselines import EASE, ItemKNN, Popularity, popularity_scores
from recommendations.engine.blend import Blend, fit_blend_weights, standardize_rows
from recommendations.engine.candidates import RECOMMENDER_CLASSES
from recommendations.engine.content import ContentAffinity
from recommendations.engine.lowrank import LowRankEASE
from recommendations.engine.metrics import evaluate, evaluate_scores, top_k
from recommendations.engine.neural import NeuralRecommender
from recommendations.engine.sequence import SequenceRecommender
from recommendations.engine.split import temporal_split
from tests.engine.synthetic import TYPE_WEIGHTS, make_shop

SAVED_SUFFIXES = {".npz", ".json", ".keras"}


@dataclass(frozen=True)
class Candidate:
    id: str
    make: Callable[[], Recommender]
    personal: bool = True  # learns who likes what (else: the same popular list for everyone)
    scores_new_items: bool = False  # scores products added after fitting from their features


CANDIDATES = [
    Candidate("popularity", lambda: Popularity(), personal=False),
    Candidate("trending", lambda: Popularity(half_life_days=7.0), personal=False),
    Candidate("item_knn", lambda: ItemKNN()),
    Candidate("item_knn_recency", lambda: ItemKNN(history_half_life_days=14.0)),
    Candidate("ease", lambda: EASE()),
    Candidate("ease_recency", lambda: EASE(history_half_life_days=14.0)),
    Candidate("ease_lowrank", lambda: LowRankEASE(rank=4)),
    Candidate("blend", lambda: Blend([Popularity(), ItemKNN()], [0.3, 0.7])),
    Candidate("content", lambda: ContentAffinity(), scores_new_items=True),
    Candidate("neural", lambda: NeuralRecommender(epochs=12, patience=12, seed=1), scores_new_items=True),
    Candidate(
        "sequence",
        lambda: SequenceRecommender(dim=32, seq_len=8, epochs=12, patience=12, seed=1),
        scores_new_items=True,
    ),
]

Event = tuple[str, str, float]  # (product id, event type, age in days)

IDS = ["A", "B", "C", "D", "E", "F", "G", "H"]
# Viewing A leads to buying B (and B is the most popular item); C leads to D, a niche pair; E..H are filler.
TRAIN_PATTERNS: list[tuple[int, list[Event]]] = [
    (40, [("A", "view", 2.0), ("B", "purchase", 1.0)]),
    (15, [("C", "view", 3.0), ("D", "view", 2.5)]),
    (25, [("E", "view", 4.0), ("F", "view", 3.5)]),
    (20, [("G", "view", 5.0), ("H", "view", 4.5)]),
]
SCORED = [
    [("A", "view", 0.5)],
    [("C", "view", 0.5)],
    [("A", "view", 30.0), ("E", "view", 0.1)],
    [],
]


def features_for(ids: list[str]) -> ItemFeatures:
    """A catalog of these product ids; pairs (A, B), (C, D)... share a category, anything else is category 1."""
    groups = {"A": 1, "B": 1, "C": 2, "D": 2, "E": 3, "F": 3, "G": 4, "H": 4}
    n = len(ids)
    return ItemFeatures(
        item_ids=list(ids),
        category=np.array([groups.get(i, 1) for i in ids], dtype=np.int32),
        brand=np.ones(n, dtype=np.int32),
        price_z=np.linspace(-1, 1, n).astype(np.float32),
        price_band=np.ones(n, dtype=np.int32),
        popularity=np.zeros(n, dtype=np.float32),
        age_days=np.full(n, 30.0, dtype=np.float32),
        text=[f"product {i}" for i in ids],
        categories=["ab", "cd", "ef", "gh"],
        brands=["acme"],
    )


def interactions(shoppers: list[list[Event]], ids: list[str]) -> Interactions:
    """Interactions in `ids`' column order, sorted by shopper then time (oldest first)."""
    column = {pid: i for i, pid in enumerate(ids)}
    rows = [
        (s, column[pid], EVENT_TYPE_CODES[kind], TYPE_WEIGHTS[kind], age)
        for s, events in enumerate(shoppers)
        for pid, kind, age in sorted(events, key=lambda e: -e[2])
    ]
    shopper, item, code, weight, age = (np.array(col) for col in zip(*rows, strict=True)) if rows else ([],) * 5
    return Interactions(
        n_shoppers=len(shoppers),
        n_items=len(ids),
        shopper=np.asarray(shopper, dtype=np.int32),
        item=np.asarray(item, dtype=np.int32),
        event_type=np.asarray(code, dtype=np.int8),
        weight=np.asarray(weight, dtype=np.float32),
        age_days=np.asarray(age, dtype=np.float32),
    )


def train_shoppers() -> list[list[Event]]:
    return [list(events) for count, events in TRAIN_PATTERNS for _ in range(count)]


def top(model: Recommender, shoppers: list[list[Event]], ids: list[str], k: int = 3) -> list[list[str]]:
    """Each shopper's top-k product ids, their own history masked."""
    history = interactions(shoppers, ids)
    return [[ids[i] for i in row if i >= 0] for row in top_k(model.score(history), k, exclude=history.seen())]


def parts(model: Recommender) -> list[Recommender]:
    """A blend standardizes each shopper's row over the whole catalog, so alignment is checked per component."""
    return list(model.components) if isinstance(model, Blend) else [model]


@pytest.fixture(scope="module", params=CANDIDATES, ids=lambda c: c.id)
def fitted(request) -> tuple[Candidate, Recommender]:
    candidate = request.param
    model = candidate.make()
    model.fit(interactions(train_shoppers(), IDS), features_for(IDS))
    return candidate, model


def test_learns_the_pattern(fitted):
    candidate, model = fitted
    a_viewer, c_viewer = top(model, [[("A", "view", 0.0)], [("C", "view", 0.0)]], IDS)
    assert "B" in a_viewer
    if candidate.personal:
        assert "D" in c_viewer
    else:
        assert c_viewer[0] == "B"  # the most popular item first, whatever the history


def test_save_load_round_trip_without_pickle(fitted, tmp_path: Path):
    _, model = fitted
    model.save(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    assert {p.suffix for p in files} <= SAVED_SUFFIXES
    for path in files:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:  # raises on object arrays
                assert all(npz[key].dtype != object for key in npz.files)
    loaded = RECOMMENDER_CLASSES[model.name].load(tmp_path, features_for(IDS))
    assert type(loaded) is type(model)
    history = interactions(SCORED, IDS)
    np.testing.assert_allclose(loaded.score(history), model.score(history), rtol=1e-6, atol=1e-7)


def test_load_realigns_to_a_changed_catalog(fitted, tmp_path: Path):
    candidate, model = fitted
    model.save(tmp_path)
    new_ids = ["Z", *[pid for pid in reversed(IDS) if pid != "H"]]  # adds Z, drops H, reorders the rest
    loaded = RECOMMENDER_CLASSES[model.name].load(tmp_path, features_for(new_ids))
    new_history, old_history = interactions(SCORED, new_ids), interactions(SCORED, IDS)
    common = [pid for pid in new_ids if pid in IDS]
    new_cols, old_cols = [new_ids.index(p) for p in common], [IDS.index(p) for p in common]
    assert loaded.score(new_history).shape == (len(SCORED), len(new_ids))
    for old_part, new_part in zip(parts(model), parts(loaded), strict=True):
        old_scores, new_scores = old_part.score(old_history), new_part.score(new_history)
        np.testing.assert_allclose(new_scores[:, new_cols], old_scores[:, old_cols], rtol=1e-5, atol=1e-6)
        if not candidate.scores_new_items:
            assert not new_scores[:, new_ids.index("Z")].any()


def test_refuses_a_history_over_another_catalog(fitted):
    _, model = fitted
    with pytest.raises(ValueError, match="7 items, the model 8"):
        model.score(interactions(SCORED, IDS[:-1]))


def test_popularity_counts_each_shopper_once_per_item_at_their_strongest_event():
    bot_then_buyer = [("A", "view", 1.0)] * 50 + [("A", "purchase", 2.0)]
    data = interactions([bot_then_buyer, [("A", "view", 0.0), ("B", "view", 0.0)]], IDS)
    assert popularity_scores(data).tolist() == [8.0 + 1.0, 1.0] + [0.0] * 6
    # Halved every day: the purchase (2 days, 8 -> 2.0) still beats the views (1 day, 1 -> 0.5).
    assert popularity_scores(data, half_life_days=1.0).tolist() == [2.0 + 1.0, 1.0] + [0.0] * 6
    assert not popularity_scores(interactions([[]], IDS)).any()


def test_ease_refuses_a_catalog_above_max_items():
    with pytest.raises(ValueError, match=r"catalog of 8 items is too large for EASE \(max_items=7\)"):
        EASE(max_items=7).fit(interactions(train_shoppers(), IDS), features_for(IDS))


@pytest.mark.parametrize("make", [ItemKNN, lambda **kw: EASE(l2=10.0, **kw)], ids=["item_knn", "ease"])
def test_recency_weighted_history_ranks_todays_interest_first(make):
    """Two tastes, X and Y; a shopper viewed two X items long ago and one Y item today."""
    ids = ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    train = [[(f"{c}{i}", "view", 1.0 + i) for i in (1, 2, 3)] for c in "XY" for _ in range(20)]
    features = features_for(ids)
    shopper = [[("X1", "view", 200.0), ("X2", "view", 199.0), ("Y1", "view", 0.0)]]
    plain, recent = make(), make(history_half_life_days=7.0)
    plain.fit(interactions(train, ids), features)
    recent.fit(interactions(train, ids), features)
    assert top(plain, shopper, ids, k=1) == [["X3"]]  # two old X items outweigh one new Y item
    assert sorted(top(recent, shopper, ids, k=2)[0]) == ["Y2", "Y3"]


def test_standardize_rows_zeroes_constant_rows():
    z = standardize_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(z[0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert not z[1].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardize_rows_matches_float64_over_several_blocks(monkeypatch, dtype):
    from recommendations.engine import blend

    monkeypatch.setattr(blend, "STANDARDIZE_BLOCK_CELLS", 3 * 500)  # 3 rows a block, the last one short
    rng = np.random.default_rng(2)
    scores = (rng.normal(size=(10, 500)) * rng.uniform(0.01, 100, size=(10, 1)) + 1e3).astype(dtype)
    scores[4] = 7.0  # constant: no opinion
    scores[6, 3] = np.nan  # unreadable: no opinion either
    rows = scores.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # the constant and NaN rows, checked apart
        expected = (rows - rows.mean(axis=1, keepdims=True)) / rows.std(axis=1, keepdims=True)
    z = standardize_rows(scores)
    assert z.dtype == np.float32
    keep = [r for r in range(10) if r not in (4, 6)]
    np.testing.assert_allclose(z[keep], expected[keep], rtol=1e-4, atol=1e-4)
    assert not z[4].any() and not z[6].any()


def test_standardize_rows_in_place_overwrites_only_float32_scores():
    rng = np.random.default_rng(4)
    scores = (rng.normal(size=(6, 40)) * 5 + 100).astype(np.float32)
    scores[2] = 3.0
    expected = standardize_rows(scores)
    same = standardize_rows(scores, in_place=True)
    assert same is scores  # the batch's own array, no 100 MB copy at 200,000 items
    np.testing.assert_array_equal(same, expected)
    wide = (rng.normal(size=(6, 40)) * 5 + 100).astype(np.float64)
    before = wide.copy()
    z = standardize_rows(wide, in_place=True)
    assert z is not wide and z.dtype == np.float32  # a float64 batch cannot hold the float32 result
    np.testing.assert_array_equal(wide, before)
    np.testing.assert_array_equal(z, standardize_rows(before))


def test_weighted_sum_into_reused_buffers_is_the_blend_s_own_sum():
    from recommendations.engine.blend import _weighted_sum

    rng = np.random.default_rng(3)
    parts = [rng.normal(size=(4, 30)).astype(np.float32) for _ in range(3)]
    out, scratch = np.full((4, 30), np.nan, np.float32), np.full((4, 30), np.nan, np.float32)
    for weights in ([0.2, 0.0, 0.8], [0.4, 0.4, 0.2], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]):
        # What Blend.score computes: each used component scaled in float32, added in order.
        expected = np.zeros((4, 30), np.float32)
        for w, p in zip(weights, parts, strict=True):
            if w:
                expected += p * np.float32(w)
        np.testing.assert_array_equal(_weighted_sum(weights, parts, out=out, scratch=scratch), expected)
        np.testing.assert_allclose(expected, sum(w * p for w, p in zip(weights, parts, strict=True)), rtol=1e-5)


@pytest.fixture(scope="module")
def shop_split():
    data, features = make_shop(n_shoppers=300, n_items=120, seed=0)
    return temporal_split(data, features, valid_fraction=0.1, test_fraction=0.1), features


def test_personal_models_beat_popularity_on_the_planted_shop(shop_split):
    split, features = shop_split
    ndcg = {}
    for model in (Popularity(), ItemKNN(), EASE()):
        model.fit(split.train, features)
        ndcg[model.name] = evaluate(model, split.validation)["ndcg"]
    assert ndcg["item_knn"] > 2 * ndcg["popularity"]
    assert ndcg["ease"] > 2 * ndcg["popularity"]


def test_blend_weight_search_is_at_least_as_good_as_each_component(shop_split):
    split, features = shop_split
    components = [Popularity(), ItemKNN(history_half_life_days=14.0), EASE(history_half_life_days=14.0)]
    for model in components:
        model.fit(split.train, features)
    singles = [evaluate(model, split.validation)["ndcg"] for model in components]
    weights, ndcg = fit_blend_weights(components, split.validation, batch_size=50)
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)
    assert ndcg >= max(singles) - 1e-12  # every single component is a corner of the grid
    assert evaluate(Blend(components, weights), split.validation)["ndcg"] == pytest.approx(ndcg)
    # Cached scores give the same search.
    cached = [m.score(split.validation.history) for m in components]
    assert fit_blend_weights(cached, split.validation) == (weights, ndcg)
    # An explicit grid is searched as given.
    only = [(0.0, 1.0, 0.0)]
    assert fit_blend_weights(components, split.validation, grid=only) == ([0.0, 1.0, 0.0], pytest.approx(singles[1]))
    assert evaluate_scores(cached[1], split.validation)["ndcg"] == pytest.approx(singles[1])


class Scored(Recommender):
    """Row r of a fixed table for the r-th shopper of each batch: awkward values (ties, a constant row) to rank."""

    name = "scored"

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = table

    def fit(self, train, features, validation=None, on_progress=None):
        return {}

    def score(self, history):
        return self.table[: history.n_shoppers].copy()

    def save(self, directory):
        raise NotImplementedError

    @classmethod
    def load(cls, directory, features):
        raise NotImplementedError


@pytest.mark.parametrize("allowed_share", [None, 0.7])
def test_pruned_weight_search_ranks_what_the_full_rows_rank(shop_split, monkeypatch, allowed_share):
    """Every weighting's NDCG from the pool of cells that can reach a top 10 equals the full rows' own, on
    components with many ties (integer scores, a constant row), an item-kNN with mostly equal cells and EASE."""
    from recommendations.engine import blend as blend_module

    split, features = shop_split
    validation = split.validation
    shape = (validation.history.n_shoppers, validation.history.n_items)
    rng = np.random.default_rng(5)
    ties = rng.integers(0, 6, size=shape).astype(np.float32)
    ties[1] = 2.0  # no opinion for one shopper
    components = [EASE(history_half_life_days=14.0), Scored(ties), ItemKNN()]
    for model in components:
        model.fit(split.train, features)
    allowed = None if allowed_share is None else rng.random(shape[1]) < allowed_share
    pooled_calls = []
    pool_top_k = blend_module._pool_top_k
    monkeypatch.setattr(blend_module, "_pool_top_k", lambda *args: pooled_calls.append(1) or pool_top_k(*args))
    for parts in (components[:2], components):  # dense parts (a small pool), and with item-kNN's tied floor
        weightings = blend_module.simplex_grid(len(parts), 0.2)
        monkeypatch.setattr(blend_module, "POOL_MAX_SHARE", 0.0)  # every batch by its full rows
        full = [fit_blend_weights(parts, validation, grid=[w], allowed=allowed, batch_size=40)[1] for w in weightings]
        assert not pooled_calls
        monkeypatch.setattr(blend_module, "POOL_MAX_SHARE", 1.0)  # every batch by its pool
        pooled = [fit_blend_weights(parts, validation, grid=[w], allowed=allowed, batch_size=40)[1] for w in weightings]
        assert pooled_calls
        assert pooled == full
        pooled_calls.clear()
    # Weights outside the simplex (a blend can then leave its parts' range) are ranked by the full rows.
    for weights in ([1.0, 1.0], [1.5, -0.5], [0.3, 0.3]):
        ndcg = fit_blend_weights(components[:2], validation, grid=[weights], allowed=allowed, batch_size=40)[1]
        assert not pooled_calls
        monkeypatch.setattr(blend_module, "POOL_MAX_SHARE", 0.0)
        assert fit_blend_weights(components[:2], validation, grid=[weights], allowed=allowed, batch_size=40)[1] == ndcg
        monkeypatch.setattr(blend_module, "POOL_MAX_SHARE", 1.0)


def test_blend_without_weights_fits_them_on_validation(shop_split):
    split, features = shop_split
    blend = Blend([Popularity(), ItemKNN()])
    stats = blend.fit(split.train, features, split.validation)
    assert blend.weights == stats["weights"] and sum(blend.weights) == pytest.approx(1.0)
    assert blend.params["weights"] == blend.weights
