"""The slot for new products (engine/coldslot.py): where the new product lands, whose taste it follows, what a
saved slot does with products the catalog gains later, and how validation chooses the scout and the position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommendations.engine import coldslot
from recommendations.engine.base import EvalSet, Interactions, ItemFeatures
from recommendations.engine.baselines import Popularity
from recommendations.engine.coldslot import (
    POSITIONS,
    TOLERANCE,
    ColdSlot,
    choose_cold_slot,
    cold_mask,
)
from recommendations.engine.content import ContentAffinity
from recommendations.engine.metrics import evaluate_paired, top_k
from recommendations.engine.model_lists import recommend_chunks
from recommendations.engine.split import temporal_split
from tests.engine.synthetic import make_shop

# Two categories of seven products; the last of each (6 and 13) has no event yet.
A, B = list(range(6)), list(range(7, 13))
NEW_A, NEW_B = 6, 13
N = 14


def shop(extra_ids: tuple[str, ...] = ()) -> tuple[Interactions, ItemFeatures]:
    """Shoppers 0-19 buy in category A, 20-39 in B; no two products sell alike (a popularity base has no ties)."""
    rows = []
    for first, members, top in ((0, A, 20), (20, B, 19)):
        for rank, item in enumerate(members):
            for shopper in range(first, first + top - 3 * rank):
                rows.append((shopper, item, 10.0 - rank))
    rows.sort(key=lambda r: (r[0], -r[2]))
    s, i, a = (np.array(c) for c in zip(*rows, strict=True))
    data = Interactions(
        n_shoppers=40,
        n_items=N,
        shopper=s.astype(np.int32),
        item=i.astype(np.int32),
        event_type=np.full(len(rows), 2, dtype=np.int8),
        weight=np.ones(len(rows), dtype=np.float32),
        age_days=a.astype(np.float32),
    )
    n = N + len(extra_ids)
    category = np.array([1] * 7 + [2] * 7 + [1] * len(extra_ids), dtype=np.int32)
    features = ItemFeatures(
        item_ids=[f"p{k}" for k in range(N)] + list(extra_ids),
        category=category,
        brand=np.ones(n, dtype=np.int32),
        price_z=np.zeros(n, dtype=np.float32),
        price_band=np.ones(n, dtype=np.int32),
        popularity=np.zeros(n, dtype=np.float32),
        # Old stock, and the new products arrived last week: content expects them at half their category's mean rate.
        age_days=np.array([7.0 if k in (NEW_A, NEW_B) else 400.0 for k in range(n)], dtype=np.float32),
        text=[""] * n,
        categories=["a", "b"],
        brands=["acme"],
    )
    return data, features


def one_shopper(items: list[int], n_items: int = N) -> Interactions:
    """One shopper's history of these items, oldest first, a day apart."""
    n = len(items)
    return Interactions(
        n_shoppers=1,
        n_items=n_items,
        shopper=np.zeros(n, dtype=np.int32),
        item=np.array(items, dtype=np.int32),
        event_type=np.ones(n, dtype=np.int8),
        weight=np.ones(n, dtype=np.float32),
        age_days=np.arange(n, 0, -1).astype(np.float32),
    )


def fitted_slot(position: int) -> tuple[ColdSlot, Interactions, ItemFeatures]:
    data, features = shop()
    base, scout = Popularity(), ContentAffinity(cold_boost=1.0)
    base.fit(data, features)
    scout.fit(data, features)
    slot = ColdSlot(base, scout, position)
    slot.fit(data, features)
    return slot, data, features


def test_each_shopper_gets_the_new_product_of_their_taste_at_the_slot_and_the_rest_keeps_its_order():
    slot, data, _features = fitted_slot(position=3)
    assert cold_mask(data).tolist() == [k in (NEW_A, NEW_B) for k in range(N)]
    history = data.select(np.array([0, 30]))
    seen = history.seen()
    base_lists = top_k(slot.base.score(history), 6, exclude=seen)
    lists = top_k(slot.score(history), 6, exclude=seen)
    for row, new in ((0, NEW_A), (1, NEW_B)):
        assert lists[row, 2] == new  # the third place: position 3
        expected = [int(x) for x in base_lists[row] if x != new]
        assert [int(x) for x in lists[row] if x != new] == expected[:5]


def test_a_new_product_is_not_lifted_where_it_was_seen_or_over_a_product_the_scout_rates_higher():
    slot, data, _features = fitted_slot(position=1)
    # Shopper 0 (category A) viewed the new A product. The best new product left is B's, and place 1 holds B's
    # best seller, which the scout rates higher: not lifted over it.
    history = one_shopper([0, 1, NEW_A])
    seen = history.seen()
    base_list = top_k(slot.base.score(history), 4, exclude=seen)[0]
    lists = top_k(slot.score(history), 4, exclude=seen)
    scout = slot.scout.score(history)[0]
    assert base_list[0] == 7 and scout[NEW_B] < scout[7]
    assert lists[0].tolist() == base_list.tolist()
    # Before they saw it, the new A product is their best new one; at place 10 it pushes down B's worst seller,
    # which the scout rates lower: lifted there.
    earlier = one_shopper([0, 1])
    seen = earlier.seen()
    slot.params["position"] = 10
    base_list = top_k(slot.base.score(earlier), 10, exclude=seen)[0]
    lifted = top_k(slot.score(earlier), 10, exclude=seen)[0]
    scout = slot.scout.score(earlier)[0]
    assert base_list[9] == 12 and scout[NEW_A] > scout[12]
    assert lifted.tolist() == [*base_list[:9].tolist(), NEW_A]
    # No new product at all: the base's scores, untouched.
    slot.is_cold[:] = False
    history = data.select(np.arange(5))
    np.testing.assert_array_equal(slot.score(history), slot.base.score(history))


def test_in_a_served_list_the_slot_counts_the_products_the_list_holds_not_those_evaluation_leaves_out():
    """A for_you list keeps what a shopper only viewed (it leaves out bought and inactive products): the new product
    is at `position` of that list, not `position` places past everything the shopper has seen."""
    slot, _data, features = fitted_slot(position=2)
    viewer = one_shopper([0, 1, 2])  # viewed the three best-selling A products, bought nothing
    base_list = top_k(slot.base.score(viewer), 8)[0].tolist()
    assert base_list[:4] == [0, 7, 1, 8]
    served = next(recommend_chunks(slot, viewer, None, None, 8, features.category))
    assert [item for item, _score, _anchor in served[0][1]] == [0, NEW_A, *base_list[1:7]]
    # Evaluation's lists leave the viewed products out, and the slot is the second place there.
    assert top_k(slot.score(viewer), 3, exclude=viewer.seen())[0].tolist() == [7, NEW_A, 8]
    # An inactive product does not take a place either: without product 7, place 3 pushes down product 8.
    slot.params["position"] = 3
    active = np.arange(N) != 7
    served = next(recommend_chunks(slot, viewer, None, active, 4, features.category))
    assert [item for item, _score, _anchor in served[0][1]] == [0, 1, NEW_A, 8]


def test_a_saved_slot_treats_products_the_catalog_gained_since_as_new(tmp_path: Path):
    slot, _data, _features = fitted_slot(position=2)
    slot.save(tmp_path)
    _data, grown = shop(extra_ids=("p-late",))
    loaded = ColdSlot.load(tmp_path, grown)
    assert loaded.params == {"position": 2, "scout": "content"}
    assert loaded.is_cold.tolist() == [k in (NEW_A, NEW_B) for k in range(N)] + [True]
    history = one_shopper([NEW_A], N + 1)
    # The shopper saw the new A product; the late product (category A too) is the best new one left for them.
    lists = top_k(loaded.score(history), 3, exclude=history.seen())
    assert lists[0, 1] == N


def planted_split():
    data, features = make_shop(n_shoppers=600, n_items=90, seed=3, n_cold=8)
    return temporal_split(data, features, mode="global"), features


def test_validation_picks_a_scout_and_the_earliest_position_within_the_tolerance():
    split, features = planted_split()
    is_cold = cold_mask(split.train)
    assert is_cold.sum() >= 8
    base, scout = Popularity(half_life_days=7.0), ContentAffinity(cold_boost=1.0)
    base.fit(split.train, features)
    scout.fit(split.train, features)
    found = choose_cold_slot(base, {"content": scout}, split.validation, is_cold)
    assert found.reason == "slot" and found.scout == "content"
    none, *tried = found.tried
    assert none["scout"] is None and none["cold_recall"] == 0.0  # trending never lists a new product
    assert [t["position"] for t in tried] == list(POSITIONS)
    for t in tried:
        assert t["within"] == (t["cost"] <= TOLERANCE * none["ndcg"] + 1e-9)
        assert t["cold_recall"] > 0
    # The earliest position whose cost is within the tolerance, and none earlier that is.
    allowed = [t["position"] for t in tried if t["within"]]
    assert found.position == min(allowed)


def test_no_slot_without_new_products_or_when_every_position_costs_too_much(monkeypatch):
    split, features = planted_split()
    base, scout = Popularity(half_life_days=7.0), ContentAffinity(cold_boost=1.0)
    base.fit(split.train, features)
    scout.fit(split.train, features)
    nothing_new = np.zeros(split.train.n_items, dtype=bool)
    assert choose_cold_slot(base, {"content": scout}, split.validation, nothing_new).reason == "no_new_products"
    # Validation whose targets are all products with events: no slot reaches any, so the cost alone decides, as
    # for any slot: the earliest position within the tolerance, if one is.
    cold = set(split.validation.cold_items.tolist())
    warm = EvalSet(
        history=split.validation.history,
        targets=[np.array([t for t in ts if t not in cold], dtype=ts.dtype) for ts in split.validation.targets],
        cold_items=split.validation.cold_items,
    )
    found = choose_cold_slot(base, {"content": scout}, warm, cold_mask(split.train))
    assert all(t["cold_recall"] == 0 for t in found.tried)
    allowed = [t["position"] for t in found.tried if t["scout"] and t["within"]]
    assert found.position == (min(allowed) if allowed else None)
    # The base is no scout of itself.
    assert choose_cold_slot(scout, {"content": scout}, split.validation, cold_mask(split.train)).reason == "no_scout"
    # A tolerance no position can meet (a gain would be needed): no slot, and the tries say so.
    monkeypatch.setattr(coldslot, "TOLERANCE", -1.0)
    found = choose_cold_slot(base, {"content": scout}, split.validation, cold_mask(split.train))
    assert (found.scout, found.reason) == (None, "no_slot_within_tolerance")
    assert not any(t["within"] for t in found.tried if t["scout"])


def test_the_search_scores_the_chosen_slot_as_the_served_lists_score():
    split, features = planted_split()
    base, scout = Popularity(half_life_days=7.0), ContentAffinity(cold_boost=1.0)
    base.fit(split.train, features)
    scout.fit(split.train, features)
    is_cold = cold_mask(split.train)
    found = choose_cold_slot(base, {"content": scout}, split.validation, is_cold)
    assert found.position is not None
    served = ColdSlot(base, scout, found.position)
    served.fit(split.train, features)
    validation, per_shopper = evaluate_paired(served, split.validation)
    assert found.validation == pytest.approx(validation)
    np.testing.assert_allclose(found.per_shopper, per_shopper)
    # Every position tried, not only the chosen one: the inserted lists are the lifted scores' top 10.
    for t in found.tried[1:]:
        slot = ColdSlot(base, scout, t["position"])
        slot.fit(split.train, features)
        assert evaluate_paired(slot, split.validation)[0]["ndcg"] == pytest.approx(t["ndcg"], abs=1e-5)
