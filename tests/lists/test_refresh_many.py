"""Refreshing many shoppers in one task: the same lists as one at a time, in queries that do not grow with them.
Real PostgreSQL and a model trained and written by the engine."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recommendations.lists import refresh
from recommendations.lists.precompute import run_precompute
from recommendations.models import Event, StoredList
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import T_END, write_shop

pytestmark = pytest.mark.django_db


def precomputed() -> tuple[int, list[str], list[str]]:
    """item_knn serves, precomputed: (set id, the shoppers with a for_you list, the product ids)."""
    data, features = make_shop(n_shoppers=80, n_items=40, seed=5)
    write_shop(data, features)
    run = training.run_training(candidates=["item_knn"])
    training.activate(run.pk, by="test")
    set_id = run_precompute().recommendation_set_id
    shoppers = sorted(
        StoredList.objects.filter(recommendation_set_id=set_id, placement="for_you").values_list("subject", flat=True)
    )
    return set_id, shoppers, list(features.item_ids)


@pytest.fixture
def served_lists() -> tuple[int, list[str]]:
    """item_knn serves, precomputed; then twelve shoppers view and buy more. (set id, those shoppers)"""
    set_id, shoppers, products = precomputed()
    shoppers = shoppers[:12]
    for n, shopper in enumerate(shoppers):
        for k, event_type in enumerate(("view", "view", "purchase")):
            Event.objects.create(
                event_id=f"more-{n}-{k}",
                event_type=event_type,
                shopper=shopper,
                product_id=products[(7 * n + 3 * k) % len(products)],
                occurred_at=T_END + timedelta(minutes=k),
            )
    return set_id, shoppers


def for_you(set_id: int, shoppers: list[str]) -> dict[str, list]:
    rows = StoredList.objects.filter(recommendation_set_id=set_id, placement="for_you", subject__in=shoppers)
    return dict(rows.values_list("subject", "items"))


def test_with_nothing_new_a_task_writes_the_precompute_s_lists_again():
    set_id, shoppers, _ = precomputed()
    before = for_you(set_id, shoppers)
    assert len(before) >= 40
    assert refresh.refresh_shoppers(shoppers) == len(shoppers)
    assert for_you(set_id, shoppers) == before


def test_a_task_of_many_shoppers_writes_what_one_at_a_time_writes(served_lists):
    set_id, shoppers = served_lists
    before = for_you(set_id, shoppers)
    assert refresh.refresh_shoppers([*shoppers, "", shoppers[0]]) == len(shoppers)  # blanks and repeats once
    together = for_you(set_id, shoppers)
    assert together != before, "the new views and purchases changed the lists"
    bought = {e.shopper: e.product_id for e in Event.objects.filter(event_type="purchase", event_id__startswith="more")}
    assert all(bought[s] not in [row[0] for row in together[s]] for s in shoppers)
    for shopper in shoppers:
        assert refresh.refresh_shopper(shopper) == len(together[shopper])
    assert for_you(set_id, shoppers) == together


def test_a_task_s_queries_do_not_grow_with_its_shoppers(served_lists):
    _, shoppers = served_lists
    refresh.refresh_shoppers(shoppers[:1])  # the model loaded once, as a worker keeps it
    with CaptureQueriesContext(connection) as few:
        refresh.refresh_shoppers(shoppers[:3])
    with CaptureQueriesContext(connection) as many:
        refresh.refresh_shoppers(shoppers)
    assert len(many.captured_queries) == len(few.captured_queries) <= 10, [q["sql"][:80] for q in many]


def test_a_shopper_left_with_nothing_to_recommend_loses_the_stale_list(served_lists):
    set_id, shoppers = served_lists
    # A shopper whose every event the model cannot read (an unknown product) gets no list: the old one goes.
    StoredList.objects.filter(recommendation_set_id=set_id, placement="for_you", subject=shoppers[0]).update(
        subject="v:ghost"
    )
    Event.objects.create(
        event_id="ghost", event_type="view", shopper="v:ghost", product_id="no-such", occurred_at=T_END
    )
    assert refresh.refresh_shoppers(["v:ghost", shoppers[1]]) == 2
    assert "v:ghost" not in for_you(set_id, ["v:ghost"]) and for_you(set_id, [shoppers[1]])


@pytest.mark.parametrize("union", [True, False])  # PostgreSQL's per-shopper LIMITs in one UNION, or the window
def test_each_shopper_s_newest_events_are_read_however_many_they_have(monkeypatch, union):
    if union and connection.vendor == "sqlite":
        pytest.skip("SQLite allows no LIMIT inside a UNION")
    monkeypatch.setattr(refresh, "MAX_HISTORY_EVENTS", 3)
    monkeypatch.setattr(refresh, "UNION_SHOPPERS", 2)  # three shoppers: two statements
    monkeypatch.setattr(connection.features, "supports_slicing_ordering_in_compound", union)
    for n, shopper in enumerate(["v:a", "v:b", "v:c"]):
        for k in range(2 + 2 * n):  # 2, 4 and 6 events
            Event.objects.create(
                event_id=f"e-{n}-{k}",
                event_type="view",
                shopper=shopper,
                product_id=f"p{k}",
                occurred_at=T_END + timedelta(minutes=k),
            )
    rows = refresh._newest_events(["v:a", "v:b", "v:c"], ["view"])
    by_shopper = {s: [(p, t) for s2, p, _, t in rows if s2 == s] for s in ("v:a", "v:b", "v:c")}
    assert [p for p, _ in by_shopper["v:a"]] == ["p0", "p1"]
    assert [p for p, _ in by_shopper["v:b"]] == ["p1", "p2", "p3"]  # the newest three, oldest first
    assert [p for p, _ in by_shopper["v:c"]] == ["p3", "p4", "p5"]
