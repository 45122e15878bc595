"""When and in which language an e-mail goes, sent for real over SMTP: quiet hours in the shopper's zone hold it
(no row) until a later run sends it; a flow at the shopper's best hour waits for it within a day and misses no week;
the e-mail is written in the shopper's language; the settings are checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from recommendations.conf import check_settings
from recommendations.models import Message
from recommendations.push import timing
from recommendations.push.sending import send_due_messages
from tests.factories import make_event, recommendations_with

pytestmark = pytest.mark.django_db

MONDAY = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday in winter: New York is UTC-5, Shanghai UTC+8


def zone_of(user) -> str | None:
    return {"bob": "Asia/Shanghai", "cy": "America/New_York", "ann": "Not/AZone"}.get(user.username)


def language_of(user) -> str | None:
    return "zh-hans" if user.username == "bob" else None


def quiet(settings, **more) -> None:
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_QUIET_HOURS": (21, 8), **more}


def active_at(push_shop, name: str, hour: int, days: int, minute: int = 10) -> None:
    """`days` views by the shopper at hour:minute UTC, one a day over the days before MONDAY."""
    user = f"u:{push_shop.users[name].pk}"
    for day in range(1, days + 1):
        at = (MONDAY - timedelta(days=day)).replace(hour=hour, minute=minute)
        make_event("view", user, product_id=push_shop.pid("Pan"), occurred_at=at)


def rows_of(push_shop, name: str):
    return list(Message.objects.filter(user_id=str(push_shop.users[name].pk)))


def test_quiet_hours_in_the_shoppers_zone_hold_the_email_until_morning(smtp, push_shop, weekly, settings):
    quiet(settings, EMAIL_TIME_ZONE="tests.push.test_timing.zone_of")
    weekly.best_hour = False
    weekly.save()

    # 14:00 UTC: 22:00 for bob in Shanghai, quiet; ann's zone is unknown, so TIME_ZONE (UTC): mid-afternoon.
    first = send_due_messages(now=MONDAY.replace(hour=14))["flows"]["weekly"]
    assert first["sent"] == 1 and first["waiting"] == 1
    assert [r.to for r in smtp.received] == [["ann@example.com"]]
    assert rows_of(push_shop, "bob") == []  # nothing written: a later run finds him due again

    assert send_due_messages(now=MONDAY.replace(hour=23))["flows"]["weekly"]["waiting"] == 1  # 07:00 in Shanghai
    morning = send_due_messages(now=MONDAY + timedelta(days=1, minutes=30))["flows"]["weekly"]  # 08:30 there
    assert morning["sent"] == 1 and morning["waiting"] == 0
    (row,) = rows_of(push_shop, "bob")
    assert row.status == Message.Status.SENT and row.period == "2026-W49"
    assert len(smtp.to("bob@example.com")) == 1
    assert send_due_messages(now=MONDAY + timedelta(days=1, hours=3))["flows"]["weekly"]["sent"] == 0


def test_weekly_picks_wait_for_the_shoppers_best_hour(smtp, push_shop, weekly, settings):
    quiet(settings)
    active_at(push_shop, "bob", hour=18, days=12)
    active_at(push_shop, "bob", hour=10, days=3)
    assert weekly.best_hour is None  # the trigger's default: on for weekly picks

    morning = send_due_messages(now=MONDAY.replace(hour=9))["flows"]["weekly"]
    assert morning["waiting"] == 1 and morning["sent"] == 1  # ann has no history: at once
    assert smtp.to("bob@example.com") == []
    evening = send_due_messages(now=MONDAY.replace(hour=18, minute=5))["flows"]["weekly"]
    assert evening["sent"] == 1 and len(smtp.to("bob@example.com")) == 1
    (row,) = rows_of(push_shop, "bob")
    assert row.created_at == MONDAY.replace(hour=18, minute=5)


def test_a_missed_best_hour_waits_only_for_the_quiet_hours(smtp, push_shop, weekly, settings):
    quiet(settings)
    active_at(push_shop, "bob", hour=18, days=12)
    assert send_due_messages(now=MONDAY.replace(hour=9))["flows"]["weekly"]["waiting"] == 1
    # No run between 18:00 and 21:00 (a stopped beat); at 22:00 quiet hours hold it, the morning sends it.
    assert send_due_messages(now=MONDAY.replace(hour=22))["flows"]["weekly"]["waiting"] == 1
    assert send_due_messages(now=MONDAY + timedelta(days=1, hours=8))["flows"]["weekly"]["sent"] == 1
    assert len(smtp.to("bob@example.com")) == 1


def test_a_best_hour_that_moves_earlier_misses_no_week(smtp, push_shop, weekly, settings):
    quiet(settings)
    active_at(push_shop, "bob", hour=18, days=12)
    assert send_due_messages(now=MONDAY.replace(hour=18, minute=5))["flows"]["weekly"]["sent"] == 2  # ann and bob
    # The next week he is active at 09:30: his e-mail goes at 09:00, six and a half days after the last one. The
    # flow's 7-day cap counts calendar days, and every weekly e-mail goes within a day of Monday 00:00 UTC.
    active_at(push_shop, "bob", hour=9, days=40, minute=30)
    next_week = MONDAY + timedelta(days=7)
    assert send_due_messages(now=next_week.replace(hour=8))["flows"]["weekly"]["waiting"] == 1
    summary = send_due_messages(now=next_week.replace(hour=9, minute=5))["flows"]["weekly"]
    assert summary["sent"] == 1 and summary["skipped_cap"] == 0
    rows = sorted(rows_of(push_shop, "bob"), key=lambda r: r.created_at)
    assert [(r.period, r.status) for r in rows] == [("2026-W49", "sent"), ("2026-W50", "sent")]
    assert len(smtp.to("bob@example.com")) == 2


def test_the_best_hour_is_learnt_in_the_shoppers_zone(push_shop, settings):
    quiet(settings, EMAIL_TIME_ZONE="tests.push.test_timing.zone_of")
    active_at(push_shop, "cy", hour=23, days=12)  # 18:10 in New York
    cy = str(push_shop.users["cy"].pk)
    zones = timing.zones({cy: push_shop.users["cy"]})
    assert timing.best_hours([cy], zones, MONDAY.replace(hour=12)) == {cy: 18}
    # Too few events to learn from: no best hour.
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_BEST_HOUR_MIN_EVENTS": 13}
    assert timing.best_hours([cy], zones, MONDAY.replace(hour=12)) == {}


def test_the_best_hour_is_never_in_quiet_hours_and_send_from_is_within_a_day(settings):
    quiet(settings)
    assert [timing.is_quiet(h) for h in (20, 21, 23, 0, 7, 8)] == [False, True, True, True, True, False]
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_QUIET_HOURS": (1, 5)}
    assert [timing.is_quiet(h) for h in (0, 1, 4, 5)] == [False, True, True, False]
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_QUIET_HOURS": None}
    assert not any(timing.is_quiet(h) for h in range(24))
    since = MONDAY.replace(hour=19, minute=40)
    assert timing.send_from(since, 18, UTC) == (MONDAY + timedelta(days=1)).replace(hour=18)
    assert timing.send_from(since, 19, UTC) == since  # its hour now: at once
    assert timing.send_from(since, 20, UTC) == MONDAY.replace(hour=20)


def test_each_shopper_gets_the_email_in_their_language(smtp, push_shop, weekly, settings):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_LANGUAGE": "tests.push.test_timing.language_of"}
    send_due_messages()
    (bob,) = smtp.to("bob@example.com")
    (ann,) = smtp.to("ann@example.com")
    assert bob.message["Subject"] == "本周为您精选"  # "Picked for you this week"
    for body in (bob.html, bob.text):
        assert "访问商店" in body and "Visit the shop" not in body  # the footer of base.html / base.txt
    assert "根据你的喜好挑选" in bob.html  # serving's reason, worded in his language too
    assert '<html lang="zh-hans">' in bob.html
    assert ann.message["Subject"] == "Picked for you this week"
    assert "Visit the shop" in ann.html and "Picked for your taste" in ann.html and "访问商店" not in ann.text


def test_the_language_comes_from_the_host_or_the_users_attribute(settings):
    assert timing.language_of(SimpleNamespace(language="zh-Hans")) == "zh-hans"
    assert timing.language_of(SimpleNamespace(language="xx")) == ""  # not one the site offers: LANGUAGE_CODE
    assert timing.language_of(SimpleNamespace()) == ""
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_LANGUAGE": lambda user: 1 / 0}
    assert timing.language_of(SimpleNamespace(language="zh-hans")) == ""  # a failing callable: LANGUAGE_CODE


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"EMAIL_QUIET_HOURS": (21, 24)}, "EMAIL_QUIET_HOURS"),
        ({"EMAIL_QUIET_HOURS": "21-8"}, "EMAIL_QUIET_HOURS"),
        ({"EMAIL_TIME_ZONE": "nowhere.zone_of"}, "EMAIL_TIME_ZONE"),
        ({"EMAIL_LANGUAGE": 3}, "EMAIL_LANGUAGE"),
        ({"EMAIL_BEST_HOUR_MIN_EVENTS": 0}, "EMAIL_BEST_HOUR_MIN_EVENTS"),
    ],
)
def test_the_timing_settings_are_checked(settings, values, problem):
    good = recommendations_with(
        SITE_URL="https://shop.example", EMAIL_TIME_ZONE="tests.push.test_timing.zone_of", EMAIL_QUIET_HOURS=(22, 7)
    )
    settings.RECOMMENDATIONS = {**good, **values}
    errors = [e for e in check_settings() if e.id == "recommendations.E015"]
    assert len(errors) == 1 and problem in errors[0].msg
    settings.RECOMMENDATIONS = good
    assert not [e for e in check_settings() if e.id == "recommendations.E015"]
