"""New products in the content candidate: the prior calibrated on products that were new in training, and the
validation-bounded lift of each shopper's best new product."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommendations.engine.base import Interactions, ItemFeatures
from recommendations.engine.content import ContentAffinity, cold_prior
from recommendations.engine.metrics import top_k

# One category of 30 products over 60 days: 0-19 steady sellers (created long ago), 20-24 arrived on day 40 and
# sell fast from their first day, 25-27 old stock first found on day 45 by one shopper each; 28 is brand new (created
# yesterday, no events), 29 is old stock nobody ever touched.
N = 30
STEADY, ARRIVALS, DUSTY = range(20), range(20, 25), range(25, 28)
NEW, DEAD = 28, 29


def shop() -> tuple[Interactions, ItemFeatures]:
    rng = np.random.default_rng(0)
    rows = []  # (shopper, item, age in days)
    shopper = 0
    for day in range(60):
        for item in STEADY:
            if rng.random() < 0.3:
                rows.append((shopper, item, 60.0 - day))
                shopper += 1
        if day >= 40:
            for item in ARRIVALS:
                for _ in range(2):
                    rows.append((shopper, item, 60.0 - day))
                    shopper += 1
    for item in DUSTY:
        rows.append((shopper, item, 15.0))
        shopper += 1
    rows.sort(key=lambda r: (r[0], -r[2]))
    s, i, a = (np.array(c) for c in zip(*rows, strict=True))
    n = len(rows)
    data = Interactions(
        n_shoppers=shopper,
        n_items=N,
        shopper=s.astype(np.int32),
        item=i.astype(np.int32),
        event_type=np.ones(n, dtype=np.int8),
        weight=np.ones(n, dtype=np.float32),
        age_days=a.astype(np.float32),
    )
    created = np.full(N, 400.0)
    created[list(ARRIVALS)] = 20.0
    created[NEW] = 1.0
    features = ItemFeatures(
        item_ids=[f"p{k}" for k in range(N)],
        category=np.ones(N, dtype=np.int32),
        brand=np.ones(N, dtype=np.int32),
        price_z=np.zeros(N, dtype=np.float32),
        price_band=np.ones(N, dtype=np.int32),
        popularity=np.zeros(N, dtype=np.float32),
        age_days=created.astype(np.float32),
        text=[""] * N,
        categories=["things"],
        brands=["acme"],
    )
    return data, features


def test_the_prior_follows_what_new_products_of_that_age_sold():
    data, features = shop()
    model = ContentAffinity(cold_boost=1.0)
    model.fit(data, features)
    prior = model.cold_prior
    fresh, old = prior.share(np.array([0.0, 1.0])), prior.share(np.array([400.0]))
    # Arrivals sold far above their category's mean from day one; old stock found late sold next to nothing.
    assert fresh[0] == fresh[1] > 1.0
    assert old[0] < 0.5 < fresh[0]
    assert prior.evidence[0] == len(ARRIVALS)  # the arrivals, and nothing else, were new at under a month old
    # So a brand-new product outranks dead stock of its category, and many a steady seller.
    assert model.log_share[NEW] > model.log_share[DEAD]
    assert (model.log_share[NEW] > model.log_share[list(STEADY)]).mean() > 0.5


def test_without_dated_newcomers_the_prior_is_the_configured_share():
    data, _ = shop()
    undated = np.zeros(N)  # age 0: no created dates
    prior = cold_prior(data, undated, np.ones(N), default=0.5)
    assert prior.shares == [0.5] * len(prior.shares) and not any(prior.evidence)


def test_the_lift_takes_one_slot_per_shopper_and_survives_save_and_load(tmp_path: Path):
    data, features = shop()
    features.age_days[DEAD] = 1.0  # two brand-new products in one category
    model = ContentAffinity(cold_boost=1e6)
    model.fit(data, features)
    plain = ContentAffinity(cold_boost=1.0)
    plain.fit(data, features)
    history = data.select(np.arange(50))
    lifted = model.score(history) != plain.score(history)
    assert (lifted.sum(axis=1) == 1).all()  # one product per shopper, not both new ones
    assert set(np.flatnonzero(lifted.any(axis=0))) <= {NEW, DEAD}
    lists = top_k(model.score(history), 1, exclude=history.seen())
    assert np.isin(lists[:, 0], [NEW, DEAD]).all()  # a huge lift puts it first

    model.save(tmp_path)
    loaded = ContentAffinity.load(tmp_path, features)
    np.testing.assert_allclose(loaded.score(history), model.score(history), rtol=1e-6)
    assert loaded.cold_prior == model.cold_prior and loaded.chosen["cold_boost"] == 1e6


def test_a_product_added_after_fitting_gets_the_prior_of_its_age(tmp_path: Path):
    data, features = shop()
    model = ContentAffinity(cold_boost=1.0)
    model.fit(data, features)
    grown = ItemFeatures(
        item_ids=[*features.item_ids, "fresh", "stale"],
        category=np.r_[features.category, 1, 1].astype(np.int32),
        brand=np.r_[features.brand, 1, 1].astype(np.int32),
        price_z=np.r_[features.price_z, 0, 0].astype(np.float32),
        price_band=np.r_[features.price_band, 1, 1].astype(np.int32),
        popularity=np.r_[features.popularity, 0, 0].astype(np.float32),
        age_days=np.r_[features.age_days, 0.5, 900.0].astype(np.float32),
        text=[*features.text, "", ""],
        categories=features.categories,
        brands=features.brands,
    )
    model.save(tmp_path)
    loaded = ContentAffinity.load(tmp_path, grown)
    fresh, stale = loaded.log_share[N], loaded.log_share[N + 1]
    assert fresh > stale
    assert loaded.is_cold[N] and loaded.is_cold[N + 1] and not loaded.is_cold[0]


@pytest.mark.parametrize("betas", [(1.0, 0.5, 0.5), (1.0, 0.0, 0.0)])  # the second ties groups of other brands
def test_the_best_new_product_by_groups_is_the_one_a_full_search_finds(betas):
    # 600 products in 4 categories x 3 brands x 2 price bands, 70 % of them without events, so new products share
    # their facets and share term in groups: the search by groups must pick what the search over every new product
    # picks (ties to the lower index), also for shoppers who have a new product in their history.
    from recommendations.engine.coldslot import best_new

    rng = np.random.default_rng(5)
    n, shoppers = 600, 120
    sold = np.flatnonzero(rng.random(n) < 0.3)
    rows = sorted((s, int(rng.choice(sold)), float(rng.uniform(0, 60))) for s in range(shoppers) for _ in range(6))
    rows.sort(key=lambda r: (r[0], -r[2]))
    s, i, a = (np.array(c) for c in zip(*rows, strict=True))
    train = Interactions(
        n_shoppers=shoppers,
        n_items=n,
        shopper=s.astype(np.int32),
        item=i.astype(np.int32),
        event_type=np.ones(s.size, dtype=np.int8),
        weight=np.ones(s.size, dtype=np.float32),
        age_days=a.astype(np.float32),
    )
    features = ItemFeatures(
        item_ids=[f"p{k}" for k in range(n)],
        category=rng.integers(0, 4, n).astype(np.int32),
        brand=rng.integers(0, 3, n).astype(np.int32),
        price_z=np.zeros(n, dtype=np.float32),
        price_band=rng.integers(0, 2, n).astype(np.int32),
        popularity=np.zeros(n, dtype=np.float32),
        age_days=rng.choice([2.0, 200.0, 2000.0], n).astype(np.float32),
        text=[""] * n,
        categories=["a", "b", "c", "d"],
        brands=["x", "y", "z"],
    )
    model = ContentAffinity(betas=betas, gamma=1.0, cold_boost=1.0)
    model.fit(train, features)
    assert model._cold_group_firsts() is not None  # the search by groups is taken
    cold = np.flatnonzero(model.is_cold)
    # Later histories: the same shoppers, a third of them with a new product viewed since.
    extra = [(r, int(rng.choice(cold)), 0.1) for r in range(0, shoppers, 3)]
    later_rows = sorted(rows + extra, key=lambda r: (r[0], -r[2]))
    s, i, a = (np.array(c) for c in zip(*later_rows, strict=True))
    later = Interactions(
        shoppers,
        n,
        s.astype(np.int32),
        i.astype(np.int32),
        np.ones(s.size, dtype=np.int8),
        np.ones(s.size, dtype=np.float32),
        a.astype(np.float32),
    )
    for history in (train, later):
        scores = model.score(history)
        matrix = history.matrix(model.params["history_half_life_days"])
        got_rows, got_items = model._best_new(scores, matrix)
        want_rows, want_items = best_new(scores, model.is_cold, matrix)
        assert got_rows.tolist() == want_rows.tolist() and got_items.tolist() == want_items.tolist()
    seen_new = later.matrix()[:, cold].tocoo()
    assert seen_new.nnz  # the case of a shopper with a new product in their history was exercised
