"""The temporal split: nothing after a cut reaches what a model fits on or scores from at that cut."""

from __future__ import annotations

import numpy as np
import pytest

from recommendations.engine.base import Interactions
from recommendations.engine.split import temporal_split
from tests.engine.synthetic import make_shop


def test_train_holds_only_events_before_the_validation_cut():
    data, features = make_shop(seed=3)
    split = temporal_split(data, features, valid_fraction=0.1, test_fraction=0.1)
    # Train ages are re-measured from the cut, so each train event is strictly older than the cut.
    assert split.train.n_events > 0
    assert (split.train.age_days > 0).all()
    originals = data.age_days[data.age_days > split.valid_cut_days]
    assert split.train.n_events == originals.size
    assert np.allclose(np.sort(split.train.age_days + split.valid_cut_days), np.sort(originals), atol=1e-3)
    # About the requested shares land after each cut.
    newer_than_valid = (data.age_days <= split.valid_cut_days).mean()
    assert 0.15 <= newer_than_valid <= 0.25


@pytest.mark.parametrize("which", ["validation", "test"])
def test_eval_histories_end_at_their_cut_and_targets_are_new_items_after_it(which):
    data, features = make_shop(seed=4)
    split = temporal_split(data, features)
    evalset = getattr(split, which)
    assert evalset.n_shoppers > 20
    assert (evalset.history.age_days > 0).all()
    seen = evalset.history.seen().tocsr()
    for row, targets in enumerate(evalset.targets):
        assert targets.size > 0
        history_items = seen.indices[seen.indptr[row] : seen.indptr[row + 1]]
        assert not np.intersect1d(targets, history_items).size, "a target was already in the history"


def test_a_hand_built_history_is_cut_exactly():
    # Shopper 0: items 0,1 long ago, item 2 in the validation window, item 3 in the test window.
    # Shopper 1: only old events. Shopper 2: only a new event (no history: not evaluated).
    ages = [100, 90, 50, 80, 70, 60, 9, 1, 0.5, 0.2, 5, 3]
    items = [0, 1, 4, 1, 0, 5, 2, 3, 5, 4, 6, 6]
    shoppers = [0, 0, 0, 1, 1, 1, 0, 0, 1, 2, 2, 2]
    order = np.lexsort((-np.array(ages), np.array(shoppers)))
    data = Interactions(
        n_shoppers=3,
        n_items=7,
        shopper=np.array(shoppers, dtype=np.int32)[order],
        item=np.array(items, dtype=np.int32)[order],
        event_type=np.ones(12, dtype=np.int8),
        weight=np.ones(12, dtype=np.float32),
        age_days=np.array(ages, dtype=np.float32)[order],
    )
    split = temporal_split(data, valid_fraction=0.25, test_fraction=0.25, max_eval_shoppers=None)
    # Quantiles of the ages: test cut at 2.5 days (3 newest events after it), validation cut at 29.5 days.
    assert split.test_cut_days == pytest.approx(2.5) and split.valid_cut_days == pytest.approx(29.5)
    assert sorted(split.train.item.tolist()) == [0, 0, 1, 1, 4, 5]  # nothing newer than 29.5 days
    val = split.validation
    # Shopper 0 went on to item 2 (age 9); shopper 2 had no history before the cut; shopper 1 nothing new.
    assert [t.tolist() for t in val.targets] == [[2]]
    assert sorted(val.history.item.tolist()) == [0, 1, 4]
    test = split.test
    # At the test cut: shopper 0 -> item 3, shopper 1 -> item 5 was already seen (not a target),
    # shopper 2 -> item 4 (its history is item 6).
    assert [t.tolist() for t in test.targets] == [[3], [4]]
    assert sorted(test.history.item.tolist()) == [0, 1, 2, 4, 6, 6]


def test_cold_items_are_those_without_events_before_the_cut():
    data, features = make_shop(seed=5, n_cold=8)
    split = temporal_split(data, features)
    trained = np.unique(split.train.item)
    assert np.intersect1d(split.validation.cold_items, trained).size == 0
    assert set(range(data.n_items)) == set(trained) | set(split.validation.cold_items.tolist())
    # The late products of the generator are cold at the validation cut.
    assert {data.n_items - 1, data.n_items - 2} <= set(split.validation.cold_items.tolist())


def test_split_refuses_data_without_a_time_span():
    data = Interactions(
        n_shoppers=2,
        n_items=2,
        shopper=np.array([0, 1], dtype=np.int32),
        item=np.array([0, 1], dtype=np.int32),
        event_type=np.array([1, 1], dtype=np.int8),
        weight=np.ones(2, dtype=np.float32),
        age_days=np.zeros(2, dtype=np.float32),
    )
    with pytest.raises(ValueError, match="too little time"):
        temporal_split(data)
    with pytest.raises(ValueError, match="fraction"):
        temporal_split(data, valid_fraction=0.6, test_fraction=0.5)
