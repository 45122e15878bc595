"""The RecommendationSet admin: list counts for every placement a set holds, counted once per page.

The changelist reads the page's sets, then one GROUP BY over their stored lists; the number of queries must not
grow with the number of sets on the page.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from recommendations.admin.sets import RecommendationSetAdmin
from recommendations.models import RecommendationSet, StoredList

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:recommendations_recommendationset_changelist"


def make_set(status: str = RecommendationSet.Status.RETIRED, **lists: int) -> RecommendationSet:
    """A set holding `n` lists of each placement (keyword "for_you_at_run7" stands for "for_you@run7")."""
    rec_set = RecommendationSet.objects.create(
        status=status, activated_at=timezone.now() if status == RecommendationSet.Status.ACTIVE else None
    )
    StoredList.objects.bulk_create(
        StoredList(recommendation_set=rec_set, placement=name.replace("_at_", "@"), subject=str(n), items=[["1", 1]])
        for name, count in lists.items()
        for n in range(count)
    )
    return rec_set


def storedlist_queries(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if StoredList._meta.db_table in q["sql"]]


def rows_by_set(html: str) -> dict[str, str]:
    """Each changelist row's list-counts cell, keyed by the set's link text ("Set #12 (active)")."""
    rows = re.findall(
        r'<tr><td class="action-checkbox">.*?>(Set #\d+ \(\w+\))</a>.*?<td class="field-list_counts">(.*)</td></tr>',
        html,
    )
    return dict(rows)


def counts_in(cell: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td></tr>", cell)}


def test_every_placement_a_set_holds_is_counted_on_its_row(staff_client):
    active = make_set(
        RecommendationSet.Status.ACTIVE,
        for_you=4,
        similar=3,
        trending=2,
        bought_together=5,
        buy_again=1,
        for_you_at_run7=2,
    )
    older = make_set(for_you=1, bought_together=2)
    empty = make_set(RecommendationSet.Status.BUILDING)

    response = staff_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    rows = rows_by_set(response.content.decode())
    assert counts_in(rows[str(active)]) == {
        "bought_together": 5,
        "buy_again": 1,
        "for_you": 4,
        "for_you@run7": 2,
        "similar": 3,
        "trending": 2,
    }
    assert counts_in(rows[str(older)]) == {"bought_together": 2, "for_you": 1}
    assert rows[str(empty)] == "no lists"


def test_the_page_counts_its_lists_in_one_query_however_many_sets_it_shows(staff_client):
    make_set(RecommendationSet.Status.ACTIVE, for_you=2, bought_together=1)
    make_set(similar=1)
    with CaptureQueriesContext(connection) as few:
        assert staff_client.get(reverse(CHANGELIST)).status_code == 200
    for n in range(12):
        make_set(for_you=n % 3 + 1, buy_again=1, **{f"for_you_at_run{n}": 1})
    with CaptureQueriesContext(connection) as many:
        response = staff_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert len(rows_by_set(response.content.decode())) == 14

    [counting] = storedlist_queries(many)
    assert "GROUP BY" in counting.upper()
    assert len(storedlist_queries(few)) == 1
    assert len(many.captured_queries) == len(few.captured_queries)


def test_only_the_page_shown_is_counted(staff_client, monkeypatch):
    monkeypatch.setattr(RecommendationSetAdmin, "list_per_page", 2)
    sets = [make_set(for_you=1) for _ in range(5)]
    with CaptureQueriesContext(connection) as captured:
        response = staff_client.get(reverse(CHANGELIST), {"p": 2})
    shown = sorted(rows_by_set(response.content.decode()))
    assert shown == sorted(str(s) for s in sets[2:0:-1])  # newest first: page 2 holds the 3rd and 2nd newest
    [counting] = storedlist_queries(captured)
    counted = {int(pk) for pk in re.search(r"IN \(([^)]*)\)", counting).group(1).split(",")}
    assert counted == {sets[2].pk, sets[1].pk}


def test_the_change_page_shows_the_same_counts(staff_client):
    rec_set = make_set(buy_again=1, for_you_at_run3=2)
    page = staff_client.get(reverse("admin:recommendations_recommendationset_change", args=[rec_set.pk]))
    html = page.content.decode()
    assert "<tr><td>buy_again</td><td>1</td></tr><tr><td>for_you@run3</td><td>2</td></tr>" in html
