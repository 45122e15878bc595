"""Daily analytics: events rolled up into PlacementDay rows, the admin's report, CSV export, task, schedule, command."""

from __future__ import annotations

import csv
import importlib
import io
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from celery import current_app
from django.apps import apps as django_apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from recommendations import analytics
from recommendations.models import PlacementDay, TrainingRun
from recommendations.tasks import refresh_analytics
from tests.factories import make_event, staff_with

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
D1, D2 = date(2026, 5, 1), date(2026, 5, 2)
PAGE = "admin:recommendations_placementday_changelist"
REFRESH = "admin:recommendations_placementday_refresh"
EXPORT = "admin:recommendations_placementday_export"


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def impression(shopper, placement, when, sources, variant="", rec="") -> None:
    items = [f"p{i}" for i in range(len(sources))]
    context = {"items": items, "sources": sources}
    make_event(
        "impression",
        shopper,
        placement=placement,
        recommendation_id=rec or f"imp-{shopper}-{when:%H%M}",
        variant=variant,
        context=context,
        occurred_at=when,
    )


def click(shopper, placement, product, rec, when, variant="") -> None:
    make_event(
        "click",
        shopper,
        placement=placement,
        product_id=product,
        recommendation_id=rec,
        variant=variant,
        occurred_at=when,
    )


M, X = "model", "exploration"

FIELDS = ("impressions", "items_shown", "exploration_items", "clicks", "add_to_carts", "orders", "revenue")


def counts(*values) -> dict:
    return dict(zip(FIELDS, [*values[:-1], Decimal(values[-1])], strict=True))


# What the history below must roll up into: (day, placement, variant) -> counters, in FIELDS order.
EXPECTED = {
    (D1, "for_you", ""): counts(4, 12, 4, 3, 1, 3, "31.50"),
    (D1, "similar", ""): counts(3, 15, 0, 1, 1, 1, "12.00"),
    (D2, "for_you", ""): counts(1, 2, 0, 1, 0, 0, "0.00"),
    (D2, "for_you", "7:B"): counts(2, 5, 1, 1, 1, 1, "7.00"),
    (D2, "similar", ""): counts(1, 4, 0, 1, 0, 1, "8.00"),
}


@pytest.fixture
def history():
    """Two days of blocks, clicks and attributed sales on for_you and similar, plus what must not count."""
    # Day 1, for_you: 4 blocks, 12 items, 4 of them exploration slots.
    impression("v:a", "for_you", at(D1, 9, 0), [M, X, M, M])
    impression("v:b", "for_you", at(D1, 9, 10), [M, X, X, M])
    impression("v:c", "for_you", at(D1, 9, 20), [M, M])
    impression("v:d", "for_you", at(D1, 9, 30), [X, M])
    # Day 1, similar: 3 blocks of 5.
    for shopper, minute in (("v:a", 5), ("v:b", 15), ("v:e", 25)):
        impression(shopper, "similar", at(D1, 9, minute), [M] * 5)
    click("v:a", "for_you", "p1", "r-a", at(D1, 10, 0))
    click("v:a", "for_you", "p2", "r-a", at(D1, 10, 1))
    click("v:d", "for_you", "p4", "r-d", at(D1, 10, 2))
    click("v:b", "similar", "p5", "r-b", at(D1, 10, 3))
    make_event("click", "v:x", product_id="p9", occurred_at=at(D1, 10, 4))  # no placement: not a block's click
    make_event("add_to_cart", "v:a", product_id="p1", occurred_at=at(D1, 10, 5))  # attributed to for_you
    make_event("add_to_cart", "v:a", product_id="p9", occurred_at=at(D1, 10, 6))  # never clicked: not counted
    make_event("add_to_cart", "v:b", product_id="p5", occurred_at=at(D1, 10, 6))  # attributed to similar
    # One order of two attributed lines; one attributed order on similar; one purchase nobody recommended.
    for product, value in (("p1", "20.00"), ("p2", "5.50")):
        make_event(
            "purchase", "v:a", product_id=product, value=value, context={"order_id": 101}, occurred_at=at(D1, 11)
        )
    make_event("purchase", "v:b", product_id="p5", value="12.00", context={"order_id": 102}, occurred_at=at(D1, 11))
    make_event("purchase", "v:c", product_id="p9", value="99.00", context={"order_id": 103}, occurred_at=at(D1, 11))
    # A back end that names a placement but no block (no recommendation id, no click to attribute): not counted either.
    make_event("add_to_cart", "v:c", product_id="p8", placement="for_you", occurred_at=at(D1, 11))
    make_event(
        "purchase",
        "v:c",
        product_id="p8",
        value="50.00",
        placement="for_you",
        context={"order_id": 103},
        occurred_at=at(D1, 11),
    )
    # Two attributed purchases with no order id (imported history): an order each.
    make_event("purchase", "v:d", product_id="p4", value="3.00", occurred_at=at(D1, 11, 0))
    make_event("purchase", "v:d", product_id="p4", value="3.00", occurred_at=at(D1, 11, 30))

    # Day 2: an experiment on for_you (variant 7:B) next to the default arm, and one order across two placements.
    impression("v:a", "for_you", at(D2, 8, 0), [M, M])
    impression("v:e", "for_you", at(D2, 8, 0), [X, M, M], variant="7:B")
    impression("v:f", "for_you", at(D2, 8, 10), [M, M], variant="7:B")
    impression("v:e", "similar", at(D2, 8, 20), [M] * 4)
    click("v:e", "for_you", "p10", "r-e", at(D2, 9, 0), variant="7:B")
    click("v:e", "similar", "p6", "r-e2", at(D2, 9, 1))
    click("v:a", "for_you", "p2", "r-a2", at(D2, 9, 2))
    # Conversions carry their click's arm (as the click-to-conversion copy of the variant does).
    make_event("add_to_cart", "v:e", product_id="p10", variant="7:B", occurred_at=at(D2, 9, 30))
    make_event(
        "purchase",
        "v:e",
        product_id="p10",
        value="7.00",
        variant="7:B",
        context={"order_id": 104},
        occurred_at=at(D2, 10),
    )
    make_event("purchase", "v:e", product_id="p6", value="8.00", context={"order_id": 104}, occurred_at=at(D2, 10))

    # Just outside the two days.
    impression("v:g", "for_you", at(D1, 0) - timedelta(seconds=1), [M])
    impression("v:g", "for_you", at(D2 + timedelta(days=1), 0), [M])


def stored() -> dict[tuple[date, str, str], dict]:
    return {(r.day, r.placement, r.variant): {f: getattr(r, f) for f in FIELDS} for r in PlacementDay.objects.all()}


# ---- the rollup --------------------------------------------------------------------------------------------------


def test_rebuild_counts_exactly_what_the_events_say(history):
    assert analytics.rebuild_days(D1, D2) == len(EXPECTED)
    assert stored() == EXPECTED


def test_the_python_fallback_counts_the_same_as_the_database(history):
    analytics.rebuild_days(D1, D2, items_in_database=False)
    assert stored() == EXPECTED


def test_rebuild_is_idempotent_and_touches_only_its_range(history):
    outside = PlacementDay.objects.create(day=date(2026, 4, 20), placement="for_you", impressions=9)
    PlacementDay.objects.create(day=D1, placement="gone", impressions=5)  # stale: no such events any more
    analytics.rebuild_days(D1, D2)
    first = {key: dict(value) for key, value in stored().items()}
    assert analytics.rebuild_days(D1, D2) == len(EXPECTED)
    assert stored() == first
    assert (D1, "gone", "") not in first
    assert PlacementDay.objects.get(pk=outside.pk).impressions == 9, "rows outside the range are left alone"
    assert PlacementDay.objects.filter(day__range=(D1, D2)).count() == len(EXPECTED)


def test_one_day_rebuild_sees_only_that_day(history):
    assert analytics.rebuild_days(D2, D2) == 3
    assert set(stored()) == {key for key in EXPECTED if key[0] == D2}


def test_a_day_is_a_day_in_the_sites_time_zone(settings):
    late = datetime(2026, 5, 2, 2, 30, tzinfo=UTC)  # 22:30 on 1 May in New York
    impression("v:tz", "for_you", late, [M, X])
    settings.TIME_ZONE = "America/New_York"
    analytics.rebuild_days(D1, D2)
    assert list(PlacementDay.objects.values_list("day", "impressions", "exploration_items")) == [(D1, 1, 1)]
    settings.TIME_ZONE = "UTC"
    analytics.rebuild_days(D1, D2)
    assert list(PlacementDay.objects.values_list("day", "impressions")) == [(D2, 1)]


def test_a_range_that_ends_before_it_starts_is_refused():
    with pytest.raises(ValueError, match="before it starts"):
        analytics.rebuild_days(D2, D1)


def test_impressions_without_items_count_as_blocks_with_nothing_in_them():
    make_event("impression", "v:z", placement="trending", context={}, occurred_at=at(D1, 12))
    make_event("impression", "v:z", placement="trending", context={"items": "p1", "sources": X}, occurred_at=at(D1, 13))
    analytics.rebuild_days(D1, D1)
    row = PlacementDay.objects.get()
    assert (row.impressions, row.items_shown, row.exploration_items) == (2, 0, 0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-13-01"}, "is not a date"),
        ({"to": "yesterday"}, "is not a date"),
        ({"from": "2026-05-03", "to": "2026-05-01"}, "is after"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "at most 366 days"),
        ({"from": "0001-01-01", "to": "0001-01-02"}, "must be between"),
    ],
)
def test_parse_period_refuses_bad_input_with_a_sentence(params, message):
    with pytest.raises(analytics.PeriodError, match=message):
        analytics.parse_period(params)


def test_parse_period_defaults_to_the_last_30_days():
    assert analytics.parse_period({}, today=D2) == (D2 - timedelta(days=29), D2)
    assert analytics.parse_period({"from": "2026-05-01", "to": "2026-05-01"}) == (D1, D1)


def test_csv_cells_that_look_like_formulas_are_defused():
    assert [analytics.csv_safe(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "ok", 12, None)] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "ok",
        "12",
        "",
    ]


# ---- the task, the schedule and the command ----------------------------------------------------------------------


@pytest.fixture
def eager():
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


def test_the_task_rebuilds_the_days_it_is_given(history, eager):
    assert refresh_analytics.apply(kwargs={"start": "2026-05-01", "end": "2026-05-02"}).get() == len(EXPECTED)
    assert stored() == EXPECTED


def test_the_task_rebuilds_yesterday_and_today_by_default(eager):
    today = analytics.local_today()
    for day in (today - timedelta(days=2), today - timedelta(days=1), today):
        impression("v:now", "for_you", datetime(day.year, day.month, day.day, 12, tzinfo=UTC), [M])
    assert refresh_analytics.apply().get() == 2
    assert sorted(PlacementDay.objects.values_list("day", flat=True)) == [today - timedelta(days=1), today]


def test_the_schedule_refreshes_analytics_hourly_and_is_reversible():
    task = PeriodicTask.objects.get(name="Refresh analytics (hourly)")
    assert task.task == "recommendations.tasks.refresh_analytics"
    assert (task.interval.every, task.interval.period) == (1, "hours")
    assert task.enabled and task.kwargs == "{}"
    assert task.task in current_app.tasks
    migration = importlib.import_module("recommendations.migrations.0007_analytics_schedule")
    migration.delete_schedule(django_apps, None)
    assert not PeriodicTask.objects.filter(name=task.name).exists()
    assert PeriodicTask.objects.filter(name="Precompute recommendations (hourly)").exists(), "others are left alone"
    migration.create_schedule(django_apps, None)
    assert PeriodicTask.objects.get(name=task.name).interval.every == 1


def test_the_command_rebuilds_the_last_days_with_a_progress_bar(capsys):
    today = analytics.local_today()
    for back in (0, 2, 5):
        day = today - timedelta(days=back)
        impression("v:cmd", "for_you", datetime(day.year, day.month, day.day, 12, tzinfo=UTC), [M, X])
    out = io.StringIO()
    call_command("refresh_analytics", "--days", "3", stdout=out)
    assert f"Rebuilt analytics for {today - timedelta(days=2)} to {today}: 2 placement-day rows." in out.getvalue()
    progress = capsys.readouterr().err  # tqdm draws on the process's stderr, as in the other commands
    assert "days: 100%" in progress and "3/3" in progress, progress
    assert sorted(PlacementDay.objects.values_list("day", flat=True)) == [today - timedelta(days=2), today]


@pytest.mark.parametrize("days", ["0", "-1", "abc", "1.5", "99999"])
def test_the_command_refuses_bad_days(days):
    with pytest.raises(CommandError, match="--days must be a whole number from 1 to 3660"):
        call_command("refresh_analytics", "--days", days, "--no-progress")


def test_the_command_exits_non_zero_with_one_line_on_bad_input():
    done = subprocess.run(
        [sys.executable, "manage.py", "refresh_analytics", "--days", "many"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "CommandError: --days must be a whole number from 1 to 3660, not 'many'"
    ]


# ---- the admin report ----------------------------------------------------------------------------------------------


def section(html: str, element_id: str) -> str:
    """The markup of the element with this id, up to its closing tag (tables here are not nested)."""
    start = html.index(f'id="{element_id}"')
    tag = html.rfind("<", 0, start)
    name = html[tag + 1 : html.index(" ", tag)]
    return html[start : html.index(f"</{name}>", start)]


def totals_row(html: str, label: str) -> list[str]:
    """The cells of one row of the totals table, as text."""
    import re

    table = section(html, "rec-totals")
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in the totals table")


def page(client, **params):
    return client.get(reverse(PAGE), params)


def test_the_report_shows_totals_and_charts(history, staff_client):
    analytics.rebuild_days(D1, D2)
    response = page(staff_client, **{"from": "2026-05-01", "to": "2026-05-02"})
    assert response.status_code == 200
    html = response.content.decode()
    # impressions, clicks, CTR, add-to-carts, orders, revenue, items shown, exploration share
    assert totals_row(html, "for_you") == ["7", "5", "71.4%", "2", "4", "38.50", "19", "26.3%"]
    assert totals_row(html, "similar") == ["4", "2", "50%", "1", "2", "20.00", "19", "0%"]
    assert totals_row(html, "All placements") == ["11", "7", "63.6%", "3", "6", "58.50", "38", "13.2%"]
    for chart in ("rec-chart-ctr", "rec-chart-impressions", "rec-chart-clicks", "rec-chart-revenue"):
        assert '<svg xmlns="http://www.w3.org/2000/svg"' in section(html, chart), chart
    assert "Click-through rate by placement" in html
    assert "for_you · May 1: 75%" in html, "a CTR point's tooltip: 3 clicks on 4 blocks"
    assert "Refresh now</button>" in html and "Export CSV</a>" in html
    assert "7:B" in section(html, "rec-rows"), "the rows per day show the experiment arm"


def test_the_date_filter_narrows_and_the_placement_filter_too(history, staff_client):
    analytics.rebuild_days(D1, D2)
    html = page(staff_client, **{"from": "2026-05-02", "to": "2026-05-02"}).content.decode()
    assert totals_row(html, "for_you") == ["3", "2", "66.7%", "1", "1", "7.00", "7", "14.3%"]
    assert totals_row(html, "similar") == ["1", "1", "100%", "0", "1", "8.00", "4", "0%"]
    html = page(staff_client, **{"from": "2026-05-01", "to": "2026-05-02", "placement": "similar"}).content.decode()
    assert totals_row(html, "similar")[:2] == ["4", "2"]
    with pytest.raises(AssertionError):
        totals_row(html, "for_you")
    assert '<option value="similar" selected>' in html


def test_the_default_period_is_the_last_30_days(staff_client):
    today = analytics.local_today()
    PlacementDay.objects.create(day=today - timedelta(days=29), placement="for_you", impressions=3)
    PlacementDay.objects.create(day=today - timedelta(days=30), placement="for_you", impressions=100)
    html = page(staff_client).content.decode()
    assert f'value="{today - timedelta(days=29)}"' in html and f'value="{today}"' in html
    assert totals_row(html, "for_you")[0] == "3"


def test_an_empty_period_says_so(staff_client):
    html = page(staff_client, **{"from": "2020-01-01", "to": "2020-01-31"}).content.decode()
    assert "No analytics for these days yet" in html
    assert "No data for this period" in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-02-30"}, "is not a date"),
        ({"from": "2026-05-03", "to": "2026-05-01"}, "is after"),
        ({"from": "2020-01-01", "to": "2026-05-01"}, "at most 366 days"),
        ({"placement": "nowhere"}, "There is no placement called"),
    ],
)
def test_bad_filters_give_a_message_not_a_500(staff_client, params, message):
    response = page(staff_client, **params)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html and 'class="errornote"' in html
    assert 'class="rec-chart"' not in html


def test_names_are_escaped_in_the_table_and_the_charts(staff_client):
    PlacementDay.objects.create(day=D1, placement="<script>alert(1)</script>", impressions=4, clicks=1)
    html = page(staff_client, **{"from": "2026-05-01", "to": "2026-05-01"}).content.decode()
    assert "<script>alert(1)" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3, "table, chart legend and tooltips"


def test_staff_may_view_but_not_refresh_without_the_change_permission(history, client):
    viewer, _ = staff_with(client, "view_placementday")
    response = page(viewer)
    assert response.status_code == 200
    assert "Refresh now</button>" not in response.content.decode()
    assert viewer.post(reverse(REFRESH), {"from": "2026-05-01", "to": "2026-05-02"}).status_code == 403
    assert not PlacementDay.objects.exists()
    assert not LogEntry.objects.exists()


def test_staff_without_the_view_permission_see_nothing(client):
    nobody, _ = staff_with(client)
    assert page(nobody).status_code == 403
    assert nobody.get(reverse(EXPORT)).status_code == 403


def test_the_rows_are_read_only(staff_client):
    row = PlacementDay.objects.create(day=D1, placement="for_you", impressions=1)
    assert staff_client.get(reverse("admin:recommendations_placementday_add")).status_code == 403
    assert staff_client.post(reverse("admin:recommendations_placementday_delete", args=[row.pk])).status_code == 403
    staff_client.post(reverse("admin:recommendations_placementday_change", args=[row.pk]), {"impressions": 99})
    assert PlacementDay.objects.get(pk=row.pk).impressions == 1


def test_refresh_now_rebuilds_the_shown_days_and_is_logged(
    history, staff_client, eager, django_capture_on_commit_callbacks
):
    assert staff_client.get(reverse(REFRESH)).status_code == 405
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse(REFRESH), {"from": "2026-05-01", "to": "2026-05-02", "placement": ""})
    assert response.status_code == 302
    assert response["Location"].endswith("?from=2026-05-01&to=2026-05-02")
    assert stored() == EXPECTED
    entry = LogEntry.objects.get()
    assert entry.action_flag == CHANGE
    assert entry.content_type == ContentType.objects.get_for_model(PlacementDay)
    # Eager Celery (no broker): the rebuild ran in the request, and both the history and the message say it is done.
    rows = len(EXPECTED)
    assert entry.change_message == f"Rebuilt the analytics for 2026-05-01 to 2026-05-02 from the admin ({rows} rows)."
    html = staff_client.get(response["Location"]).content.decode()
    assert f"were rebuilt from the events: {rows} rows" in html and "being rebuilt" not in html
    assert totals_row(html, "for_you")[0] == "7"


def test_refresh_with_bad_dates_refreshes_nothing(staff_client, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = staff_client.post(reverse(REFRESH), {"from": "2026-05-09", "to": "2026-05-01"}, follow=True)
    assert callbacks == []
    assert "Nothing was refreshed" in response.content.decode()
    assert not LogEntry.objects.exists()


def test_export_is_the_filtered_rows_as_csv(history, staff_client):
    analytics.rebuild_days(D1, D2)
    response = staff_client.get(reverse(EXPORT), {"from": "2026-05-01", "to": "2026-05-02", "placement": "for_you"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="analytics-2026-05-01-2026-05-02-for_you.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == list(analytics.CSV_HEADER)
    assert rows[1:] == [
        ["2026-05-01", "for_you", "", "4", "3", "0.750000", "1", "3", "31.50", "12", "4", "0.333333"],
        ["2026-05-02", "for_you", "", "1", "1", "1.000000", "0", "0", "0.00", "2", "0", "0.000000"],
        ["2026-05-02", "for_you", "7:B", "2", "1", "0.500000", "1", "1", "7.00", "5", "1", "0.200000"],
    ]
    narrowed = staff_client.get(reverse(EXPORT), {"from": "2026-05-02", "to": "2026-05-02"})
    lines = b"".join(narrowed.streaming_content).decode().splitlines()
    assert len(lines) == 1 + 3 and all(line.startswith("2026-05-02") for line in lines[1:])


def test_export_defuses_formulas_and_refuses_bad_dates(staff_client):
    PlacementDay.objects.create(day=D1, placement='=HYPERLINK("http://x")', variant="@SUM(1)", impressions=2)
    PlacementDay.objects.create(day=D1, placement="-2+3", variant="+x", impressions=1)
    response = staff_client.get(reverse(EXPORT), {"from": "2026-05-01", "to": "2026-05-01"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert sorted((r[1], r[2]) for r in rows[1:]) == [("'-2+3", "'+x"), ('\'=HYPERLINK("http://x")', "'@SUM(1)")]
    bad = staff_client.get(reverse(EXPORT), {"from": "soon"})
    assert bad.status_code == 400 and "is not a date" in bad.content.decode()


# ---- the validation-metrics chart on the training runs' page -------------------------------------------------------


def finished_run(ndcg: float, recall: float | None = 0.2, coverage: float | None = 0.5, **fields) -> TrainingRun:
    validation = {"ndcg": ndcg}
    if recall is not None:
        validation["recall"] = recall
    if coverage is not None:
        validation["coverage"] = coverage
    fields.setdefault("status", TrainingRun.Status.SUCCEEDED)
    return TrainingRun.objects.create(
        validation_ndcg=ndcg, chosen="ease", candidates={"ease": {"validation": validation}}, **fields
    )


def test_the_training_runs_page_charts_validation_metrics_of_the_last_30_finished_runs(staff_client):
    runs = [finished_run(0.1 + i / 100) for i in range(32)]
    failed = TrainingRun.objects.create(status=TrainingRun.Status.FAILED, validation_ndcg=0.9)
    html = staff_client.get(reverse("admin:recommendations_trainingrun_changelist")).content.decode()
    chart = section(html, "rec-validation-chart")
    assert "Validation metrics of the last 30 finished runs" in chart
    assert "validation NDCG@10 · #" in chart and "recall@10 · #" in chart and "coverage · #" in chart
    assert f"validation NDCG@10 · #{runs[-1].pk}: 0.41" in chart
    assert f"#{runs[1].pk}:" not in chart and f"#{runs[2].pk}:" in chart, "only the newest 30"
    assert f"#{failed.pk}:" not in chart


def test_the_chart_leaves_out_metrics_runs_did_not_record(staff_client):
    finished_run(0.2, recall=None, coverage=None)
    finished_run(0.3, recall=None, coverage=0.4, status=TrainingRun.Status.KEPT_OLD)
    chart = section(
        staff_client.get(reverse("admin:recommendations_trainingrun_changelist")).content.decode(),
        "rec-validation-chart",
    )
    assert "coverage · #" in chart and "recall@10 · #" not in chart


def test_no_chart_before_the_first_finished_run(staff_client):
    TrainingRun.objects.create(status=TrainingRun.Status.RUNNING)
    html = staff_client.get(reverse("admin:recommendations_trainingrun_changelist")).content.decode()
    assert "rec-validation-chart" not in html
