"""Training data cleaning: bots out, bursts collapsed, purchases kept, sequences in time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from recommendations.engine import dataset
from recommendations.engine.base import EVENT_TYPE_CODES

WEIGHTS = {"view": 1.0, "add_to_cart": 4.0, "purchase": 8.0}
ITEMS = ["A", "B", "C"]
T0 = datetime(1998, 3, 1, 12, 0, tzinfo=UTC)


def row(shopper: str, item: str, kind: str, seconds: float):
    return (shopper, item, kind, T0 + timedelta(seconds=seconds))


def test_bursts_collapse_but_purchases_and_spaced_repeats_stay():
    rows = [
        row("u:1", "A", "view", 0),
        row("u:1", "A", "view", 5),  # reload: a burst
        row("u:1", "A", "view", 20),  # still inside 30 s of the one before
        row("u:1", "A", "view", 600),  # ten minutes later: a real second look
        row("u:1", "B", "purchase", 700),
        row("u:1", "B", "purchase", 701),  # two order lines: two purchases
    ]
    log = dataset.event_log_from_rows(rows, ITEMS, WEIGHTS)
    cleaned, stats = dataset.clean_log(log, burst_seconds=30, bot_max_events_per_minute=60)
    assert stats.burst_repeats_dropped == 2
    assert cleaned.n_events == 4
    assert int(cleaned.is_purchase.sum()) == 2


def test_a_shopper_faster_than_any_person_is_left_out():
    rows = [row("v:bot", ITEMS[i % 3], "view", i * 0.5) for i in range(100)]
    rows += [row("u:2", "C", "view", 0), row("u:2", "A", "add_to_cart", 90)]
    log = dataset.event_log_from_rows(rows, ITEMS, WEIGHTS)
    cleaned, stats = dataset.clean_log(log, burst_seconds=30, bot_max_events_per_minute=60)
    assert stats.bot_shoppers == 1
    assert stats.bot_events_dropped == 100
    assert {log.shoppers[s] for s in cleaned.shopper_idx} == {"u:2"}


def test_interactions_are_sequences_in_time_order_with_types_and_ages_from_the_newest_event():
    rows = [
        row("u:2", "C", "add_to_cart", 3 * 86_400),
        row("u:1", "B", "view", 86_400),
        row("u:2", "A", "view", 0),
        row("u:1", "A", "purchase", 2 * 86_400),
    ]
    log = dataset.event_log_from_rows(rows, ITEMS, WEIGHTS)
    interactions, shoppers = dataset.to_interactions(log)
    ptr = interactions.indptr()
    by_shopper = {shoppers[s]: [ITEMS[i] for i in interactions.item[ptr[s] : ptr[s + 1]]] for s in range(len(shoppers))}
    assert by_shopper == {"u:2": ["A", "C"], "u:1": ["B", "A"]}
    assert np.isclose(interactions.age_days.min(), 0.0)
    assert np.isclose(interactions.age_days.max(), 3.0)
    codes = {
        ITEMS[i]: int(c) for i, c in zip(interactions.item, interactions.event_type, strict=True) if ITEMS[i] != "A"
    }
    assert codes == {"B": EVENT_TYPE_CODES["view"], "C": EVENT_TYPE_CODES["add_to_cart"]}


def test_item_features_fill_missing_values():
    profiles = [
        ("A", "Espresso beans", "coffee", "Roastery", 12.5, "dark roast", T0),
        ("B", "Green tea", "tea", "", None, "", None),
        ("C", "Mug", "", "Clay", 30, "ceramic", T0 - timedelta(days=10)),
    ]
    features = dataset.item_features(profiles)
    assert features.categories == ["coffee", "tea"]
    assert features.category.tolist() == [1, 2, 0]
    assert features.brand.tolist()[1] == 0
    assert features.price_band[1] == 0 and features.price_band[0] > 0 and features.price_band[2] > 0
    assert features.price_z[1] == 0.0
    assert features.age_days.tolist() == [0.0, 0.0, 10.0]
    assert features.text[0] == "Espresso beans dark roast"
