"""Retention on PostgreSQL: exactly the expired rows go (boundary to the microsecond), in batches, with progress."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.utils import timezone

from recommendations import retention, tasks
from recommendations.analytics import rebuild_days
from recommendations.models import Event, PlacementDay
from tests.factories import make_event, recommendations_with

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=500_000)
TICK = timedelta(microseconds=1)


def at(delta: timedelta, event_type: str = "view", shopper: str = "v:keep") -> Event:
    return make_event(event_type, shopper=shopper, product_id="p1", occurred_at=NOW - delta)


def test_events_strictly_before_the_cutoff_go_and_the_one_at_it_stays(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=30, IMPRESSION_RETENTION_DAYS=None)
    cutoff = timedelta(days=30)
    older = at(cutoff + TICK)
    on_the_line = at(cutoff)
    newer = at(cutoff - TICK, "purchase")
    old_impression = at(cutoff + timedelta(days=1), "impression")
    counts = retention.apply_retention(NOW)
    assert counts == {"events": 1, "impressions": 1}
    left = set(Event.objects.values_list("pk", flat=True))
    assert left == {on_the_line.pk, newer.pk}
    assert older.pk not in left and old_impression.pk not in left


def test_impressions_may_have_a_shorter_retention_of_their_own(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=90, IMPRESSION_RETENTION_DAYS=7)
    old_impression = at(timedelta(days=7) + TICK, "impression")
    young_impression = at(timedelta(days=7), "impression")
    old_click = at(timedelta(days=8), "click")
    assert retention.apply_retention(NOW) == {"events": 0, "impressions": 1}
    assert set(Event.objects.values_list("pk", flat=True)) == {young_impression.pk, old_click.pk}
    assert not Event.objects.filter(pk=old_impression.pk).exists()


def test_impressions_are_never_kept_longer_than_the_other_events(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=10, IMPRESSION_RETENTION_DAYS=90)
    at(timedelta(days=11), "impression")
    assert retention.apply_retention(NOW) == {"events": 0, "impressions": 1}


def test_impression_retention_alone_keeps_every_other_event(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=None, IMPRESSION_RETENTION_DAYS=1)
    view = at(timedelta(days=400))
    at(timedelta(days=2), "impression")
    assert retention.apply_retention(NOW) == {"events": 0, "impressions": 1}
    assert list(Event.objects.values_list("pk", flat=True)) == [view.pk]


def test_off_without_a_setting_nothing_is_deleted(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=None, IMPRESSION_RETENTION_DAYS=None)
    at(timedelta(days=5000))
    assert retention.cutoffs(NOW).active is False
    assert retention.apply_retention(NOW) == {"events": 0, "impressions": 0}
    assert Event.objects.count() == 1


def test_deletes_run_in_batches_and_report_each(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=10)
    for index in range(10):
        at(timedelta(days=11, minutes=index), shopper=f"v:old{index}")
    kept = at(timedelta(days=1))
    reported: list[int] = []
    counts = retention.apply_retention(NOW, batch=3, on_batch=reported.append)
    assert reported == [3, 3, 3, 1]
    assert counts["events"] == 10
    assert list(Event.objects.values_list("pk", flat=True)) == [kept.pk]


def test_the_command_shows_progress_and_says_what_it_deleted(settings, capsys):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=30)
    for index in range(4):
        at(timedelta(days=31 + index), shopper=f"v:old{index}")
    at(timedelta(days=1))
    out = StringIO()
    call_command("apply_retention", "--dry-run", stdout=out)
    assert "4 events would be deleted." in out.getvalue()
    assert Event.objects.count() == 5
    out = StringIO()
    capsys.readouterr()
    call_command("apply_retention", stdout=out)
    assert "Deleted 4 events that happened before" in out.getvalue()
    assert "4/4" in capsys.readouterr().err  # the progress bar (on stderr) reached its total
    assert Event.objects.count() == 1


def test_the_command_says_when_retention_is_off(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=None, IMPRESSION_RETENTION_DAYS=None)
    out = StringIO()
    call_command("apply_retention", stdout=out)
    assert "Retention is off" in out.getvalue()


def test_the_daily_task_applies_the_settings(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=1)
    at(timedelta(days=3))
    assert tasks.apply_retention() == {"events": 1, "impressions": 0}
    assert Event.objects.count() == 0


def test_analytics_keep_the_counts_of_days_retention_has_started_to_delete(settings):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=30)
    today = timezone.localdate(timezone=timezone.get_default_timezone())
    old_day = today - timedelta(days=40)
    PlacementDay.objects.create(day=old_day, placement="for_you", impressions=12, clicks=3)
    retention.apply_retention()
    rebuild_days(old_day, today)
    kept = PlacementDay.objects.get(day=old_day, placement="for_you")
    assert (kept.impressions, kept.clicks) == (12, 3)


@pytest.mark.parametrize("value", [0, -1, "30", True])
def test_a_bad_retention_setting_is_a_check_error(settings, value):
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=value)
    messages = [error.msg for error in run_checks() if error.id == "recommendations.E006"]
    assert any("EVENT_RETENTION_DAYS" in message for message in messages)


def test_migrate_schedules_the_daily_task():
    from django_celery_beat.models import PeriodicTask

    periodic = PeriodicTask.objects.get(task="recommendations.tasks.apply_retention")
    assert periodic.enabled and (periodic.interval.every, periodic.interval.period) == (1, "days")


def test_analytics_build_old_days_that_have_no_rows_yet(settings):
    """History imported after retention was set: its days get rows from the events there are (until retention
    deletes those events, the rows then keep their counts)."""
    settings.RECOMMENDATIONS = recommendations_with(EVENT_RETENTION_DAYS=30)
    today = timezone.localdate(timezone=timezone.get_default_timezone())
    old_day = today - timedelta(days=40)
    make_event(
        "impression",
        shopper="v:old",
        placement="for_you",
        recommendation_id="r1",
        occurred_at=timezone.make_aware(timezone.datetime.combine(old_day, timezone.datetime.min.time()))
        + timedelta(hours=12),
    )
    rebuild_days(old_day, old_day)
    assert PlacementDay.objects.get(day=old_day, placement="for_you").impressions == 1
