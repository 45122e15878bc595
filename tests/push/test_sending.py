"""Flows sent for real over SMTP (an aiosmtpd server the test starts) through Django's SMTP backend: each shopper's
own products in both bodies, RFC 8058 headers, signed links; consent, the caps, weak lists, idempotency, failures
recorded, interrupted sends never repeated."""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from recommendations.models import Event, Message
from recommendations.push import tokens
from recommendations.push.sending import INTERRUPTED_AFTER, NotConfigured, send_due_messages
from recommendations.push.triggers import message_key
from tests.factories import make_event
from tests.push.conftest import SITE

pytestmark = pytest.mark.django_db

CLICK_LINK = re.compile(re.escape(SITE) + r"/e/c/([^/\"<>\s]+)/")
UNSUBSCRIBE = re.compile(r"^<" + re.escape(SITE) + r"/e/u/([^/>]+)/>$")


def sunday_noon():
    """Noon on the coming Sunday: the next day is another ISO week, so a weekly flow has a new period."""
    now = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    return now + timedelta(days=(6 - now.weekday()) % 7)


def names_in(body: str, push_shop) -> list[str]:
    return [name for name in push_shop.products if re.search(rf"\b{re.escape(name)}\b", body)]


def test_the_weekly_flow_sends_each_consented_shopper_their_own_products(smtp, push_shop, weekly):
    summary = send_due_messages()

    counts = summary["flows"]["weekly"]
    assert counts["sent"] == 2 and counts["skipped_weak"] == 1  # ann and bob; cy's list is best sellers only
    assert counts["failed"] == 0
    assert sorted(r.to[0] for r in smtp.received) == ["ann@example.com", "bob@example.com"]
    (ann,) = smtp.to("ann@example.com")
    (bob,) = smtp.to("bob@example.com")
    assert ann.message["Subject"] == "Picked for you this week"
    assert ann.message["From"] == "Shop <shop@example.com>"
    # Both bodies, each with the shopper's own stored list and nothing of the other's.
    assert names_in(ann.html, push_shop) == ["Kite", "Yo-yo", "Ball", "Drum"]
    assert names_in(ann.text, push_shop) == ["Kite", "Yo-yo", "Ball", "Drum"]
    assert names_in(bob.html, push_shop) == ["Tent", "Lamp", "Stove", "Rope"]
    assert ann.message.get_body(("html",)).get_content_type() == "text/html"
    assert ann.message.get_body(("plain",)).get_content_type() == "text/plain"
    row = Message.objects.get(user_id=str(push_shop.users["ann"].pk))
    assert row.status == Message.Status.SENT and row.sent_at is not None
    assert row.products == [push_shop.pid(n) for n in ("Kite", "Yo-yo", "Ball", "Drum")]
    # The e-mail is an impression of its block, on the flow's placement, for its clicks.
    impression = Event.objects.get(event_type="impression", recommendation_id=row.recommendation_id)
    assert impression.placement == "email:weekly" and impression.context["items"] == row.products


def test_every_message_carries_one_click_unsubscribe_headers_and_signed_links(smtp, push_shop, weekly):
    send_due_messages()
    (ann,) = smtp.to("ann@example.com")
    ann_id = str(push_shop.users["ann"].pk)
    row = Message.objects.get(user_id=ann_id)

    match = UNSUBSCRIBE.match(ann.message["List-Unsubscribe"].strip())  # a long header is folded after its colon
    assert match, ann.message["List-Unsubscribe"]
    assert ann.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert tokens.read_unsubscribe(match.group(1)) == tokens.Unsubscribe(row.recommendation_id)  # the e-mail, no one
    # The visible link is the same page, in both bodies.
    assert f"{SITE}/e/u/{match.group(1)}/" in ann.html and f"{SITE}/e/u/{match.group(1)}/" in ann.text
    clicks = [tokens.read_click(t) for t in CLICK_LINK.findall(ann.html)]
    assert [c.product_id for c in clicks] == row.products
    assert {(c.user_id, c.flow, c.recommendation_id) for c in clicks} == {("", "", row.recommendation_id)}
    assert [tokens.read_click(t).product_id for t in CLICK_LINK.findall(ann.text)] == row.products


def test_a_shopper_without_marketing_consent_gets_nothing(smtp, push_shop, weekly):
    summary = send_due_messages()
    dee = str(push_shop.users["dee"].pk)
    assert smtp.to("dee@example.com") == []
    assert not Message.objects.filter(user_id=dee).exists()
    assert summary["flows"]["weekly"]["due"] == 3  # the audience is who opted in: ann, bob, cy


def test_a_weak_list_is_recorded_and_not_sent(smtp, push_shop, weekly):
    send_due_messages()
    cy = Message.objects.get(user_id=str(push_shop.users["cy"].pk))
    assert cy.status == Message.Status.SKIPPED_WEAK
    assert cy.products and push_shop.pid("Pot") in cy.products  # best sellers filled it: nothing of cy's own
    assert smtp.to("cy@example.com") == []


def test_a_second_run_in_the_same_period_sends_nothing(smtp, push_shop, weekly):
    now = sunday_noon()
    send_due_messages(now=now)
    assert len(smtp.received) == 2
    again = send_due_messages(now=now + timedelta(hours=3))
    assert len(smtp.received) == 2
    assert again["flows"]["weekly"]["already"] == 3 and again["flows"]["weekly"]["sent"] == 0


def test_the_caps_hold_across_periods_and_flows_and_lapse(smtp, push_shop, weekly, browse):
    now = sunday_noon()
    browse.enabled = False
    browse.save()
    send_due_messages(now=now)
    assert len(smtp.received) == 2

    # Monday is a new week (a new key), but the flow's own cap (7 days) holds: a row, no e-mail.
    monday = send_due_messages(now=now + timedelta(days=1))
    assert monday["flows"]["weekly"]["skipped_cap"] == 2 and len(smtp.received) == 2
    assert (
        Message.objects.filter(
            status=Message.Status.SKIPPED_CAP, period__endswith=f"W{(now + timedelta(days=1)).isocalendar()[1]:02d}"
        ).count()
        == 2
    )

    # Another flow within EMAIL_MIN_HOURS_BETWEEN (16) of the last e-mail: the global cap.
    browse.enabled = True
    browse.save()
    bob = str(push_shop.users["bob"].pk)
    later = now + timedelta(days=8)
    send_due_messages(now=later)  # a week and a day on: the weekly flow's cap has lapsed
    assert len(smtp.to("bob@example.com")) == 2
    make_event("view", f"u:{bob}", product_id=push_shop.pid("Tent"), occurred_at=later)
    summary = send_due_messages(now=later + timedelta(hours=4))
    assert summary["flows"]["browse"]["skipped_cap"] == 1
    assert len(smtp.to("bob@example.com")) == 2
    # The skip spent that day's key; a visit the next day, once the 16 hours have passed, is mailed.
    make_event("view", f"u:{bob}", product_id=push_shop.pid("Tent"), occurred_at=later + timedelta(hours=20))
    summary = send_due_messages(now=later + timedelta(hours=23))
    assert summary["flows"]["browse"]["sent"] == 1
    assert len(smtp.to("bob@example.com")) == 3


def test_browse_abandonment_mails_what_was_viewed_and_similar_products(smtp, push_shop, browse):
    bob, ann = (str(push_shop.users[n].pk) for n in ("bob", "ann"))
    now = timezone.now()
    make_event("view", f"u:{bob}", product_id=push_shop.pid("Pan"), occurred_at=now - timedelta(hours=6))
    make_event("view", f"u:{bob}", product_id=push_shop.pid("Tent"), occurred_at=now - timedelta(hours=5))
    # ann viewed and added to the cart: not abandoned; cy viewed a minute ago: still browsing.
    make_event("view", f"u:{ann}", product_id=push_shop.pid("Tent"), occurred_at=now - timedelta(hours=5))
    make_event("add_to_cart", f"u:{ann}", product_id=push_shop.pid("Tent"), occurred_at=now - timedelta(hours=4))
    cy = str(push_shop.users["cy"].pk)
    make_event("view", f"u:{cy}", product_id=push_shop.pid("Tent"), occurred_at=now - timedelta(minutes=1))

    summary = send_due_messages(now=now)

    assert summary["flows"]["browse"]["due"] == 1 and summary["flows"]["browse"]["sent"] == 1
    (mail,) = smtp.received
    assert mail.to == ["bob@example.com"]
    assert mail.message["Subject"] == "Still thinking about Tent?"
    row = Message.objects.get(user_id=bob)
    assert row.products == [push_shop.pid(n) for n in ("Rope", "Stove", "Lamp")]  # Tent's similar list
    assert row.period == f"{(now - timedelta(hours=5)).astimezone(UTC):%Y-%m-%d}"
    for body in (mail.html, mail.text):
        assert {"Tent", "Pan", "Rope", "Stove", "Lamp"} <= set(names_in(body, push_shop))
    viewed = [tokens.read_click(t).product_id for t in CLICK_LINK.findall(mail.html)][:2]
    assert viewed == [push_shop.pid("Tent"), push_shop.pid("Pan")]  # the viewed products link too, newest first


def test_a_refused_recipient_is_recorded_as_failed_and_the_others_still_go(smtp, push_shop, weekly):
    smtp.refuse.add("ann@example.com")
    summary = send_due_messages()
    assert summary["flows"]["weekly"]["failed"] == 1 and summary["flows"]["weekly"]["sent"] == 1
    ann = Message.objects.get(user_id=str(push_shop.users["ann"].pk))
    assert ann.status == Message.Status.FAILED and "550" in ann.error
    assert [r.to for r in smtp.received] == [["bob@example.com"]]
    smtp.refuse.clear()
    send_due_messages()  # a failure is not retried within its period
    assert smtp.to("ann@example.com") == []


def test_a_key_already_claimed_is_never_sent_and_an_interrupted_send_is_not_repeated(smtp, push_shop, weekly):
    now = timezone.now()
    period = f"{now.isocalendar()[0]}-W{now.isocalendar()[1]:02d}"
    ann, bob = (str(push_shop.users[n].pk) for n in ("ann", "bob"))
    # Another worker holds ann's key right now; bob's was claimed an hour ago by a process that died mid-send.
    Message.objects.create(
        key=message_key(weekly, ann, period), flow=weekly, user_id=ann, period=period, status="sending", created_at=now
    )
    Message.objects.create(
        key=message_key(weekly, bob, period),
        flow=weekly,
        user_id=bob,
        period=period,
        status="sending",
        created_at=now - INTERRUPTED_AFTER - timedelta(minutes=1),
    )
    summary = send_due_messages(now=now)
    assert smtp.received == []
    assert summary["interrupted"] == 1 and summary["flows"]["weekly"]["already"] == 2
    assert Message.objects.get(user_id=bob).status == Message.Status.FAILED
    assert "interrupted" in Message.objects.get(user_id=bob).error
    assert Message.objects.get(user_id=ann).status == Message.Status.SENDING  # alive: left to its worker


def test_consent_withdrawn_after_the_batch_was_read_stops_the_send(smtp, push_shop, weekly, monkeypatch):
    """The claim reads consent once more: an unsubscribe while the batch composed holds."""
    from recommendations.push import compose, consent

    ann = str(push_shop.users["ann"].pk)
    original = compose.compose

    def compose_then_unsubscribe(flow, dues, *args):
        composed = original(flow, dues, *args)
        consent.set_email_consent(ann, False, via="weekly")
        return composed

    monkeypatch.setattr(compose, "compose", compose_then_unsubscribe)
    summary = send_due_messages()
    assert summary["flows"]["weekly"]["skipped_no_consent"] == 1
    assert Message.objects.get(user_id=ann).status == Message.Status.SKIPPED_NO_CONSENT
    assert smtp.to("ann@example.com") == [] and len(smtp.to("bob@example.com")) == 1


def test_a_dry_run_writes_and_sends_nothing(smtp, push_shop, weekly):
    summary = send_due_messages(dry_run=True)
    assert summary["flows"]["weekly"]["sent"] == 2 and summary["flows"]["weekly"]["skipped_weak"] == 1
    assert smtp.received == [] and not Message.objects.exists()


def test_nothing_is_sent_without_site_url(smtp, push_shop, weekly, settings):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SITE_URL": ""}
    with pytest.raises(NotConfigured):
        send_due_messages()
    with pytest.raises(CommandError, match="SITE_URL"):
        call_command("send_flows", "--no-progress")
    assert smtp.received == []


def test_the_command_sends_one_flow_and_says_what_it_did(smtp, push_shop, weekly, browse):
    out = StringIO()
    call_command("send_flows", "--flow", "weekly", "--no-progress", stdout=out)
    assert "weekly: 3 due, 2 sent, 0 failed, 1 weak" in out.getvalue()
    assert "browse" not in out.getvalue()
    assert len(smtp.received) == 2
    with pytest.raises(CommandError, match="nope"):
        call_command("send_flows", "--flow", "nope", "--no-progress")


def test_a_host_callable_decides_consent_and_an_unsubscribe_still_wins(smtp, push_shop, weekly, settings):
    from recommendations.push.consent import set_email_consent

    settings.RECOMMENDATIONS = {
        **settings.RECOMMENDATIONS,
        "EMAIL_CONSENT": "tests.push.test_sending.newsletter_field",
        "EMAIL_ADDRESS": "tests.push.test_sending.work_address",
    }
    set_email_consent(push_shop.users["bob"].pk, False, via="weekly")  # bob left through the app's link
    send_due_messages()
    # The host says yes for bob and dee (ann and cy opted in on the app's rows, which no longer count); bob left.
    assert [r.to for r in smtp.received] == [["dee@work.example"]]


def newsletter_field(user) -> bool:
    return user.username in ("bob", "dee")


def work_address(user) -> str:
    return f"{user.username}@work.example"


def test_names_are_escaped_in_the_html_body_and_plain_in_the_text(smtp, push_shop, weekly, staff_client):
    from django.urls import reverse

    from recommendations.models import ProductProfile

    name = 'Kite <img src=x onerror="alert(1)"> & Co'
    ProductProfile.objects.filter(product_id=push_shop.pid("Kite")).update(name=name)
    page = staff_client.get(
        reverse("admin:recommendations_flow_preview", args=[weekly.pk]), {"user": push_shop.users["ann"].pk}
    )
    send_due_messages()
    (ann,) = smtp.to("ann@example.com")
    assert "Kite &lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; Co" in ann.html
    assert "<img" not in ann.html
    assert name in ann.text
    assert b"<img" not in page.content  # the admin's preview shows both bodies escaped


def test_a_broken_flow_is_reported_and_the_others_still_send(smtp, push_shop, weekly, browse, settings):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_MIN_HOURS_BETWEEN": 0}  # bob is due for both
    browse.placement = "gone"  # a placement the settings no longer have
    browse.save()
    bob = str(push_shop.users["bob"].pk)
    make_event("view", f"u:{bob}", product_id=push_shop.pid("Tent"), occurred_at=timezone.now() - timedelta(hours=5))
    err = StringIO()
    call_command("send_flows", "--no-progress", stdout=StringIO(), stderr=err)
    assert "browse: not sent: UnknownPlacement" in err.getvalue()
    assert len(smtp.received) == 2  # the weekly flow went out


def test_each_sent_email_is_marked_by_the_next_claim_and_the_last_at_the_batchs_end(smtp, push_shop, weekly):
    """On PostgreSQL an e-mail costs one statement after its send: the next e-mail's claim marks it sent."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert send_due_messages()["flows"]["weekly"]["sent"] == 2  # ann and bob; cy's list is weak
    rows = Message.objects.filter(status=Message.Status.SENT)
    assert rows.count() == 2 and all(row.sent_at is not None for row in rows)
    assert len(smtp.received) == 2
    if connection.vendor == "postgresql":
        sql = [q["sql"] for q in queries.captured_queries]
        assert sum(s.startswith("WITH sent AS (UPDATE") for s in sql) == 1  # bob's claim marked ann's e-mail
        assert sum(s.startswith("UPDATE") and "sent_at" in s for s in sql) == 1  # bob's, at the batch's end


def test_a_claim_whose_key_is_taken_inserts_nothing_but_still_marks_the_email_before(push_shop, weekly):
    from recommendations.push.sending import _insert

    now = timezone.now()

    def row(key: str, status: str = Message.Status.SENDING) -> Message:
        return Message(key=key, flow=weekly, user_id="1", period="p", status=status, created_at=now)

    went = row("went")
    assert _insert(went)
    assert _insert(row("taken", Message.Status.SKIPPED_CAP))
    sent_at = now + timedelta(seconds=3)
    assert not _insert(row("taken"), (went.pk, sent_at))
    assert Message.objects.get(key="taken").status == Message.Status.SKIPPED_CAP  # the first writer's row stands
    went.refresh_from_db()
    assert (went.status, went.sent_at) == (Message.Status.SENT, sent_at)
    assert Message.objects.count() == 2
