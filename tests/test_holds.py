"""A process's holds: bounded least-recently-used maps tagged with a generation, every one cleared between tests.

A hold past its size forgets what was used longest ago, not everything: a busy process keeps the lists and profiles
its pages keep asking for. A reader working under an old generation finds nothing and cannot put back an old row.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recommendations import catalog, holds, serving
from recommendations.holds import Hold
from recommendations.lists import store
from recommendations.models import StoredList
from tests.factories import active_lists, make_category, make_product


def test_a_hold_past_its_size_forgets_the_least_recently_used():
    hold: Hold[str, int] = Hold("test", 3)
    hold.put_many([("a", 1), ("b", 2), ("c", 3)])
    assert hold.get("a") == 1  # "a" is now the most recently used: "b" is the oldest
    hold.put("d", 4)
    assert len(hold) == 3
    assert "b" not in hold
    assert hold.get_many(["a", "b", "c", "d"]) == {"a": 1, "c": 3, "d": 4}
    hold.put("e", 5)  # get_many used a, c, d in that order: "a" goes
    assert [key for key in "abcde" if key in hold] == ["c", "d", "e"]


def test_rewriting_an_entry_counts_as_a_use_and_a_batch_past_the_size_keeps_its_newest():
    hold: Hold[str, int] = Hold("test", 2)
    hold.put_many([("a", 1), ("b", 2)])
    hold.put("a", 10)
    hold.put("c", 3)
    assert hold.get_many(["a", "b", "c"]) == {"a": 10, "c": 3}
    hold.put_many([("x", 1), ("y", 2), ("z", 3)])
    assert hold.get_many(["a", "c", "x", "y", "z"]) == {"y": 2, "z": 3}


def test_get_misses_discard_and_a_held_none():
    hold: Hold[str, int | None] = Hold("test", 4)
    hold.put("none", None)  # "the product has no profile" is worth keeping too
    assert "none" in hold and hold.get("none", 0) is None
    assert hold.get("missing") is None and hold.get("missing", 7) == 7
    hold.discard("none")
    hold.discard("missing")
    assert len(hold) == 0


def test_reads_and_writes_under_another_generation_find_nothing_and_are_dropped():
    hold: Hold[str, int] = Hold("test", 4)
    hold.start(1)
    hold.put("a", 1, generation=1)
    hold.put("b", 2, generation=0)  # a reader from before the hold moved on
    assert hold.get_many(["a", "b"], generation=1) == {"a": 1}
    assert hold.get("a", generation=2) is None and hold.get_many(["a"], generation=2) == {}
    hold.start_unless_at(1)
    assert "a" in hold
    hold.start_unless_at(2)
    assert hold.generation == 2 and len(hold) == 0


def test_advance_drops_only_what_changed_unless_another_thread_moved_the_hold():
    hold: Hold[str, int] = Hold("test", 4)
    hold.start(5)
    hold.put_many([("a", 1), ("b", 2), ("c", 3)], generation=5)
    hold.advance(5, 7, {"b", "unknown"})
    assert hold.generation == 7 and hold.get_many(["a", "b", "c"], generation=7) == {"a": 1, "c": 3}
    hold.advance(5, 7, {"a"})  # already there: nothing to do
    assert "a" in hold
    hold.advance(6, 8, set())  # the hold is not at 6: it cannot tell what changed since, so it starts over
    assert hold.generation == 8 and len(hold) == 0


def test_a_hold_with_a_max_age_expires_and_starting_over_restarts_its_clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(holds.time, "monotonic", lambda: now[0])
    hold: Hold[str, int] = Hold("test", 4, max_age=600)
    hold.start(1)
    hold.put("a", 1, generation=1)
    now[0] += 600
    assert not hold.expired
    hold.advance(1, 2, set())  # a catch-up keeps the age
    now[0] += 1
    assert hold.expired
    hold.start_unless_at(2)  # at the generation, but expired: starts over
    assert not hold.expired and len(hold) == 0
    assert not Hold("test", 1).expired  # no max age: never


def test_clear_forgets_everything_and_clear_all_clears_every_hold():
    first: Hold[str, int] = Hold("first", 2, owner=__name__)
    second: Hold[str, int] = Hold("second", 2, owner=__name__)
    first.start(3)
    first.put("a", 1)
    second.put("b", 2)
    assert {first, second} <= set(holds.holds())
    first.clear()
    assert len(first) == 0 and first.generation is None
    first.put("a", 1)
    holds.clear_all()
    assert len(first) == 0 and len(second) == 0
    assert {store.LIST_HOLD, serving.PROFILE_HOLD} <= set(holds.holds())
    with pytest.raises(ValueError):
        Hold("empty", 0)


# -- the list hold, in serving ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_list_hold_past_its_size_forgets_the_oldest_list_not_all_of_them(monkeypatch):
    kitchen = make_category(slug="kitchen")
    pan, pot, wok, kettle = (make_product(name, category=kitchen) for name in ("Pan", "Pot", "Wok", "Kettle"))
    catalog.sync_products()
    active_lists(
        similar={
            str(pan.pk): [(pot, 0.9, "also")],
            str(pot.pk): [(wok, 0.9, "also")],
            str(wok.pk): [(kettle, 0.9, "also")],
        }
    )
    monkeypatch.setattr(store.LIST_HOLD, "max_size", 2)
    lists = StoredList._meta.db_table

    def reads_of(product) -> int:
        """The stored-list reads of a similar block built afresh for `product` (no block cache)."""
        with CaptureQueriesContext(connection) as queries:
            block = serving.recommend("similar", product_id=str(product.pk), limit=1, preview=True)
        assert len(block.items) == 1
        return sum(lists in q["sql"] for q in queries)

    assert [reads_of(pan), reads_of(pot), reads_of(wok)] == [1, 1, 1]  # the third list pushes out the first
    assert len(store.LIST_HOLD) == 2
    assert [reads_of(wok), reads_of(pot)] == [0, 0]  # the two newest are still held: no start over
    assert reads_of(pan) == 1  # the oldest was forgotten, and now "wok" is the least recently used
    assert (("similar", str(wok.pk)) in store.LIST_HOLD, ("similar", str(pot.pk)) in store.LIST_HOLD) == (False, True)
