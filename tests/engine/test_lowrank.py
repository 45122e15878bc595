"""The low-rank EASE: exact EASE at full rank, as good as EASE on planted neighbours where EASE runs, fits where EASE
refuses, and stands aside where EASE runs when a retrain lists both. The shared contract (learn, save/load,
re-align) is in test_recommenders.py."""

from __future__ import annotations

import numpy as np
import pytest

from recommendations.engine.base import Interactions, ItemFeatures
from recommendations.engine.baselines import EASE
from recommendations.engine.candidates import build_candidate
from recommendations.engine.lowrank import LowRankEASE, orthonormal_columns
from recommendations.engine.metrics import top_k
from tests.engine.synthetic import make_shop


def features_of(n_items: int) -> ItemFeatures:
    zeros_i, zeros_f = np.zeros(n_items, dtype=np.int32), np.zeros(n_items, dtype=np.float32)
    return ItemFeatures(
        [f"p{i}" for i in range(n_items)], zeros_i, zeros_i, zeros_f, zeros_i, zeros_f, zeros_f, [""] * n_items
    )


def planted_groups(n_items: int, n_groups: int, n_shoppers: int, seed: int = 0) -> tuple[Interactions, np.ndarray]:
    """Each shopper views 6-10 items of one group (Zipf-like within it); returns the data and each item's group."""
    rng = np.random.default_rng(seed)
    group_of = np.arange(n_items) % n_groups
    members = [np.flatnonzero(group_of == g) for g in range(n_groups)]
    shopper, item = [], []
    for s in range(n_shoppers):
        pool = members[rng.integers(n_groups)]
        weights = 1.0 / np.arange(1, pool.size + 1)
        picked = rng.choice(pool, size=rng.integers(6, 11), replace=False, p=weights / weights.sum())
        shopper += [s] * picked.size
        item += picked.tolist()
    n = len(item)
    data = Interactions(
        n_shoppers=n_shoppers,
        n_items=n_items,
        shopper=np.asarray(shopper, dtype=np.int32),
        item=np.asarray(item, dtype=np.int32),
        event_type=np.ones(n, dtype=np.int8),
        weight=np.ones(n, dtype=np.float32),
        age_days=np.zeros(n, dtype=np.float32),
    )
    return data, group_of


def same_group_share(model, data: Interactions, group_of: np.ndarray, shoppers: int = 300) -> float:
    """Share of the top-10 (history masked) in the group of the shopper's history: the planted neighbours."""
    history = data.select(np.arange(shoppers))
    lists = top_k(model.score(history), 10, exclude=history.seen())
    own = group_of[history.item[history.indptr()[:-1]]]
    return float(np.mean(group_of[lists] == own[:, None]))


def test_at_full_rank_it_is_ease_exactly():
    data, features = make_shop(n_shoppers=300, n_items=120, seed=2)
    ease, lowrank = EASE(l2=50.0), LowRankEASE(rank=120, l2=50.0)
    ease.fit(data, features)
    lowrank.fit(data, features)
    history = data.select(np.arange(40))
    np.testing.assert_allclose(lowrank.score(history), ease.score(history), atol=1e-4)


def test_recovers_planted_neighbours_as_well_as_ease_where_ease_runs():
    data, group_of = planted_groups(n_items=1500, n_groups=30, n_shoppers=4000)
    features = features_of(1500)
    ease, lowrank = EASE(), LowRankEASE(rank=64)
    ease.fit(data, features)
    lowrank.fit(data, features)
    ease_share = same_group_share(ease, data, group_of)
    lowrank_share = same_group_share(lowrank, data, group_of)
    assert ease_share > 0.9
    assert lowrank_share >= ease_share - 0.02


def test_fits_a_catalog_ease_refuses():
    data, group_of = planted_groups(n_items=12_000, n_groups=40, n_shoppers=3000, seed=1)
    features = features_of(12_000)
    with pytest.raises(ValueError, match="too large for EASE"):
        EASE().fit(data, features)
    lowrank = LowRankEASE(rank=48)
    stats = lowrank.fit(data, features)
    assert stats["rank"] == 48
    assert same_group_share(lowrank, data, group_of) > 0.9


def test_a_retrain_fits_it_only_where_ease_is_refused():
    data, features = make_shop(n_shoppers=100, n_items=60, seed=0)
    beside_ease = build_candidate("ease_lowrank", 30.0, {"ease_lowrank": {"min_items": 60}})
    with pytest.raises(ValueError, match="fits exact EASE"):
        beside_ease.fit(data, features)
    instead_of_ease = build_candidate("ease_lowrank", 30.0, {"ease_lowrank": {"min_items": 59}})
    assert instead_of_ease.fit(data, features)["n_items"] == 60


def test_validation_picks_l2_and_the_refit_keeps_it():
    from recommendations.engine.split import temporal_split

    data, features = make_shop(n_shoppers=300, n_items=120, seed=4)
    split = temporal_split(data, valid_fraction=0.2, test_fraction=0.1)
    model = LowRankEASE(rank=32)
    stats = model.fit(split.train, features, split.validation)
    assert [row["l2"] for row in stats["grid"]] == [200.0, 50.0, 800.0]
    chosen = stats["chosen"]["l2"]
    assert chosen == max(stats["grid"], key=lambda row: row["ndcg"])["l2"]
    refit = LowRankEASE(rank=32)
    refit.params.update(stats["chosen"])
    assert refit.fit(data, features)["chosen"] == {"l2": chosen}


def test_orthonormal_columns_drops_directions_a_block_does_not_span():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((500, 3))
    q = orthonormal_columns(np.c_[a, a[:, :1] + a[:, 1:2]])  # four columns spanning three directions
    assert q.shape == (500, 3)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(q @ (q.T @ a), a, atol=1e-10)  # the same span
    single = orthonormal_columns(a.astype(np.float32))
    assert single.dtype == np.float32  # items x rank blocks stay float32: half the memory at 200k items
    np.testing.assert_allclose(single.T @ single, np.eye(3), atol=1e-5)
