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


# ---- per_shopper: each shopper's own newest events are held out ------------------------------------------------------


def _interactions(rows: list[tuple[int, int, float]], n_shoppers: int, n_items: int) -> Interactions:
    """(shopper, item, age) rows, sorted the way the engine sorts them (shopper, then oldest first)."""
    shopper, item, age = (np.array(col) for col in zip(*rows, strict=True))
    order = np.lexsort((-age, shopper))
    return Interactions(
        n_shoppers=n_shoppers,
        n_items=n_items,
        shopper=shopper[order].astype(np.int32),
        item=item[order].astype(np.int32),
        event_type=np.ones(len(rows), dtype=np.int8),
        weight=np.ones(len(rows), dtype=np.float32),
        age_days=age[order].astype(np.float32),
    )


def test_per_shopper_holds_out_each_shoppers_newest_events_exactly():
    rows = [
        # Shopper 0, 8 events: 2 for test (ages 40, 30), 2 for validation (60, 50), 4 train. The event at 60 is item 1
        # again, so only item 5 is a new item to validate on.
        *[(0, i, a) for i, a in zip([0, 1, 2, 3, 1, 5, 6, 7], [100, 90, 80, 70, 60, 50, 40, 30], strict=True)],
        # Shopper 1, 4 events: holding out 1 + 1 leaves 2 < 3, so all stay in train (the newest events of the data).
        *[(1, i, a) for i, a in zip([8, 9, 10, 11], [5, 4, 3, 1], strict=True)],
        # Shopper 2, 7 events: 2 + 2 held out, but the event at age 10 ties the first test event, so it goes to test.
        *[(2, i, a) for i, a in zip([12, 13, 14, 15, 16, 17, 3], [20, 19, 18, 12, 10, 10, 2], strict=True)],
        # Shopper 3, 7 events: its validation cut (age 15) ties an older event, leaving 2 < 3 train events: short.
        *[(3, i, a) for i, a in zip(range(7), [20, 19, 15, 15, 14, 13, 12], strict=True)],
    ]
    data = _interactions(rows, n_shoppers=4, n_items=20)
    split = temporal_split(
        data, valid_fraction=0.25, test_fraction=0.25, max_eval_shoppers=None, mode="per_shopper", min_train_events=3
    )
    assert split.mode == "per_shopper" and split.evaluable_shoppers == 2
    # Train: each shopper's events before their own validation part, at the data's own ages; short shoppers whole.
    train = {s: sorted(split.train.age_days[split.train.shopper == s].tolist()) for s in range(4)}
    assert train == {0: [70, 80, 90, 100], 1: [1, 3, 4, 5], 2: [18, 19, 20], 3: [12, 13, 14, 15, 15, 19, 20]}
    # The earliest validation / test cut over shoppers: everything older is train.
    assert split.valid_cut_days == pytest.approx(60) and split.test_cut_days == pytest.approx(40)

    val = split.validation
    assert [t.tolist() for t in val.targets] == [[5], [15]]
    # Histories end at each shopper's own cut and are aged from it.
    assert sorted(val.history.select([0]).age_days.tolist()) == [10, 20, 30, 40]
    assert sorted(val.history.select([1]).age_days.tolist()) == [6, 7, 8]
    assert val.cold_items.tolist() == [7, 15, 16, 17, 18, 19]

    test = split.test
    assert [t.tolist() for t in test.targets] == [[6, 7], [3, 16, 17]]
    assert sorted(test.history.select([0]).age_days.tolist()) == [10, 20, 30, 40, 50, 60]
    assert sorted(test.history.select([1]).age_days.tolist()) == [2, 8, 9, 10]
    assert test.cold_items.tolist() == [7, 16, 17, 18, 19]


def _held_out_targets(ages, items, weights, history_before, held_from, held_to):
    """New items among the events aged in (held_from, held_to], given the history older than `history_before`."""
    window = (ages <= held_to) & (ages > held_from) & (weights > 0)
    history = set(items[ages > history_before].tolist())
    return sorted(set(items[window].tolist()) - history)


@pytest.mark.parametrize("seed", [6, 7])
def test_per_shopper_never_shows_a_shopper_their_own_future(seed):
    data, features = make_shop(seed=seed, events_per_shopper=(2, 30))
    split = temporal_split(data, features, mode="per_shopper", max_eval_shoppers=None)
    ptr, train_ptr = data.indptr(), split.train.indptr()
    expected_validation, expected_test, short = [], [], 0
    for s in range(data.n_shoppers):
        ages, items, weights = (a[ptr[s] : ptr[s + 1]] for a in (data.age_days, data.item, data.weight))
        kept = split.train.age_days[train_ptr[s] : train_ptr[s + 1]]
        # Train holds the oldest events of each shopper, with their ages unchanged, and nothing else of theirs.
        np.testing.assert_array_equal(kept, ages[: kept.size])
        np.testing.assert_array_equal(split.train.item[train_ptr[s] : train_ptr[s + 1]], items[: kept.size])
        held = ages[kept.size :]
        n = ages.size
        n_held = 2 * ((n + 9) // 10)  # ceil(10 %) for test and for validation
        if n - n_held < 3:
            # Too short to evaluate: every event stays in train (no tie can occur: times are continuous here).
            assert held.size == 0
            short += 1
            continue
        assert held.size == n_held and kept.size == n - n_held
        assert held.max() < kept.min(), "a held-out event is older than one of the shopper's train events"
        assert held.max() <= split.valid_cut_days + 1e-4  # nothing held out is older than the earliest cut
        test_cut, valid_cut = ages[n - n_held // 2], ages[n - n_held]
        val = _held_out_targets(ages, items, weights, valid_cut, test_cut, valid_cut)
        tst = _held_out_targets(ages, items, weights, test_cut, -1.0, test_cut)
        expected_validation += [val] if val else []
        expected_test += [tst] if tst else []
    assert 0 < short < data.n_shoppers // 2
    assert split.evaluable_shoppers == data.n_shoppers - short
    # Every evaluated shopper has targets, new to their history, and exactly those the definition gives.
    for evalset, expected in ((split.validation, expected_validation), (split.test, expected_test)):
        assert evalset.n_shoppers == len(expected) > 100
        assert [t.tolist() for t in evalset.targets] == expected
        assert all(t.size for t in evalset.targets)
        assert (evalset.history.age_days > 0).all()  # each history ends strictly before its own cut
        seen = evalset.history.seen().tocsr()
        for row, targets in enumerate(evalset.targets):
            assert not np.intersect1d(targets, seen.indices[seen.indptr[row] : seen.indptr[row + 1]]).size


def test_per_shopper_evaluates_more_shoppers_than_global_cuts_on_the_same_data():
    data, features = make_shop(seed=3)
    by_mode = {mode: temporal_split(data, features, mode=mode) for mode in ("global", "per_shopper")}
    assert by_mode["per_shopper"].validation.n_shoppers > by_mode["global"].validation.n_shoppers
    assert by_mode["per_shopper"].stats()["mode"] == "per_shopper"
    assert by_mode["global"].stats()["mode"] == "global"


def test_per_shopper_split_is_deterministic():
    data, features = make_shop(seed=8)
    a, b = (temporal_split(data, features, mode="per_shopper", max_eval_shoppers=50, seed=4) for _ in range(2))
    for name in ("shopper", "item", "age_days"):
        np.testing.assert_array_equal(getattr(a.train, name), getattr(b.train, name))
    for part in ("validation", "test"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.n_shoppers == 50
        assert [t.tolist() for t in x.targets] == [t.tolist() for t in y.targets]
        np.testing.assert_array_equal(x.history.age_days, y.history.age_days)


def test_an_unknown_split_mode_is_refused_by_the_split_and_the_settings_check():
    from django.test import override_settings

    from recommendations.conf import DEFAULTS, check_settings
    from recommendations.engine.split import SPLIT_SETTINGS

    data, features = make_shop(seed=3)
    with pytest.raises(ValueError, match="split mode"):
        temporal_split(data, features, mode="random")
    good = {"PRODUCT_MODEL": "shop.Product"}
    assert DEFAULTS["SPLIT"] == "auto"
    for mode in SPLIT_SETTINGS:
        with override_settings(RECOMMENDATIONS={**good, "SPLIT": mode}):
            assert check_settings() == []
    with override_settings(RECOMMENDATIONS={**good, "SPLIT": "random"}):
        assert [e.id for e in check_settings()] == ["recommendations.E007"]


def _one_visit_each(data: Interactions, seed: int = 0) -> Interactions:
    """The same events with each shopper's history squeezed into one day somewhere in the 60: shoppers come once,
    as MovieLens' raters do, so few have events on both sides of any one moment."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 59, size=data.n_shoppers)
    ptr = data.indptr()
    ages = data.age_days.astype(np.float64).copy()
    for s in range(data.n_shoppers):
        part = ages[ptr[s] : ptr[s + 1]]
        if part.size:
            ages[ptr[s] : ptr[s + 1]] = start[s] + (part - part.min()) / 60.0
    return Interactions(
        n_shoppers=data.n_shoppers,
        n_items=data.n_items,
        shopper=data.shopper,
        item=data.item,
        event_type=data.event_type,
        weight=data.weight,
        age_days=(ages - ages.min()).astype(np.float32),
    )


def test_auto_takes_the_global_cut_when_enough_shoppers_span_it_and_per_shopper_when_few_do():
    from recommendations.engine.split import decide_split

    data, _features = make_shop(n_shoppers=300, seed=3)
    split, decision = decide_split(data, "auto", min_shoppers=100)
    assert (decision.mode, decision.reason, split.mode) == ("global", "enough_span", "global")
    assert decision.spanning_shoppers == split.validation.n_shoppers >= 100
    # The same events, each shopper's within one day: a global cut leaves a handful to evaluate.
    once = _one_visit_each(data)
    global_only = temporal_split(once, mode="global")
    assert global_only.validation.n_shoppers < 100
    split, decision = decide_split(once, "auto", min_shoppers=100)
    assert (decision.mode, decision.reason, split.mode) == ("per_shopper", "few_span", "per_shopper")
    assert decision.spanning_shoppers == global_only.validation.n_shoppers
    assert split.validation.n_shoppers > 200, "per shopper, everyone with enough history is evaluated"
    assert decision.as_dict()["min_shoppers"] == 100
    # A mode named in the setting is taken as is, however few shoppers span the cut.
    split, decision = decide_split(once, "global", min_shoppers=100)
    assert (split.mode, decision.reason) == ("global", "setting")
    with pytest.raises(ValueError, match="split mode"):
        decide_split(once, "random")


def test_auto_splits_per_shopper_when_the_events_span_no_time_for_a_global_cut():
    from recommendations.engine.split import decide_split

    data, _features = make_shop(n_shoppers=50, seed=5)
    # Every event at the same moment except each shopper's newest few: no quantile cut separates train and test.
    ages = np.where(data.age_days > 0.5, 10.0, data.age_days).astype(np.float32)
    flat = Interactions(**{**data.__dict__, "age_days": ages})
    with pytest.raises(ValueError, match="too little time"):
        temporal_split(flat, mode="global")
    split, decision = decide_split(flat, "auto")
    assert (decision.reason, split.mode) == ("no_global_cut", "per_shopper")
