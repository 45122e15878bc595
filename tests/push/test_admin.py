"""Flows in the admin: the preview renders one shopper's e-mail as a send would (subject, headers, both bodies, the
same products) and says what would stop it; the form refuses what could never send; the messages are read-only."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client
from django.urls import reverse

from recommendations.models import Flow, Message
from recommendations.push.sending import send_due_messages
from tests.factories import staff_with

pytestmark = pytest.mark.django_db


def preview(client: Client, flow: Flow, user_id: object):
    return client.get(reverse("admin:recommendations_flow_preview", args=[flow.pk]), {"user": str(user_id)})


def test_the_preview_shows_the_email_exactly_as_it_is_sent(staff_client, smtp, push_shop, weekly):
    ann = push_shop.users["ann"]
    page = preview(staff_client, weekly, ann.pk)
    assert page.status_code == 200
    shown = page.content.decode()
    send_due_messages()
    (sent,) = smtp.to("ann@example.com")

    subject = re.search(r'id="rec-email-subject">([^<]*)<', shown).group(1)
    assert subject == sent.message["Subject"]
    text = html.unescape(re.search(r'<pre id="rec-email-text">(.*?)</pre>', shown, re.S).group(1))
    body = html.unescape(re.search(r'srcdoc="([^"]*)"', shown, re.S).group(1))
    # Only the signed tokens differ (a new recommendation id and timestamp): everything else is the same bytes.
    # Line by line: SMTP carries lines ending in CRLF.
    strip = re.compile(r"/e/[cu]/[^/\s\"<>]+/")

    def lines(content: str) -> list[str]:
        return [line.rstrip() for line in strip.sub("/e/…/", content).strip().splitlines()]

    assert lines(text) == lines(sent.text)
    assert lines(body) == lines(sent.html)
    assert "List-Unsubscribe-Post" in shown and "List-Unsubscribe=One-Click" in shown
    assert 'sandbox=""' in shown  # the HTML runs no script in the admin's page
    assert Message.objects.filter(user_id=str(ann.pk)).count() == 1  # the preview itself wrote nothing
    # Its breadcrumbs lead back to the flow (flow/page.html, shared with the flow's analytics).
    crumbs = re.search(r'<div class="breadcrumbs">(.*?)</div>', shown, re.S).group(1)
    change = reverse("admin:recommendations_flow_change", args=[weekly.pk])
    assert f'<a href="{change}">{weekly}</a>' in crumbs and crumbs.rstrip().endswith("Preview")


def test_the_preview_says_what_would_stop_an_email(staff_client, smtp, push_shop, weekly):
    dee, cy = push_shop.users["dee"], push_shop.users["cy"]
    assert "has not agreed to marketing e-mail" in preview(staff_client, weekly, dee.pk).content.decode()
    assert "skipped as weak" in preview(staff_client, weekly, cy.pk).content.decode()
    assert "No user has the id" in preview(staff_client, weekly, 987654).content.decode()


def test_the_preview_needs_view_permission(client, push_shop, weekly):
    nobody, _ = staff_with(Client())
    assert preview(nobody, weekly, push_shop.users["ann"].pk).status_code == 403
    viewer, _ = staff_with(Client(), "view_flow")
    assert preview(viewer, weekly, push_shop.users["ann"].pk).status_code == 200


def test_the_form_refuses_a_flow_that_could_never_send(staff_client, db):
    data = {
        "name": "Weekly similar",
        "slug": "weekly-similar",
        "trigger": "weekly_picks",
        "window_hours": 24,
        "delay_hours": 2,
        "placement": "similar",
        "size": 4,
        "min_good_items": 6,
        "subject": "{% if %}",
        "cap_days": 7,
    }
    page = staff_client.post(reverse("admin:recommendations_flow_add"), data)
    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert set(errors) == {"placement", "min_good_items", "subject"}
    assert not Flow.objects.exists()
    data.update(placement="for_you", min_good_items=3, subject="Picks for {{ user.username }}")
    assert staff_client.post(reverse("admin:recommendations_flow_add"), data).status_code == 302
    assert Flow.objects.get().subject == "Picks for {{ user.username }}"


def test_the_list_switches_a_flow_on_and_shows_the_schedule_and_messages(staff_client, smtp, push_shop, weekly):
    send_due_messages()
    page = staff_client.get(reverse("admin:recommendations_flow_changelist"))
    assert page.status_code == 200
    assert "recommendations.tasks.send_due_messages" in page.content.decode()  # the beat schedule box
    messages = staff_client.get(reverse("admin:recommendations_message_changelist"), {"status__exact": "sent"})
    assert messages.status_code == 200
    assert len(messages.context["cl"].result_list) == 2
    row = Message.objects.first()
    change = staff_client.get(reverse("admin:recommendations_message_change", args=[row.pk]))
    assert change.status_code == 200 and b'name="status"' not in change.content  # read-only


def test_send_now_queues_the_task_on_a_broker_and_never_sends_in_the_request(
    staff_client, push_shop, weekly, settings, monkeypatch
):
    from django.test import TestCase

    from recommendations import tasks

    sent: list[dict] = []

    def keep(task, **options):
        sent.append({"task": task.name, **options})

    url = reverse("admin:recommendations_flow_changelist")
    action = {"action": "send_now", "_selected_action": [weekly.pk]}
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "inline"}
    page = staff_client.post(url, action, follow=True)
    assert "manage.py send_flows --flow weekly" in page.content.decode()
    assert not Message.objects.exists()

    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "celery"}
    monkeypatch.setattr(tasks, "_send", keep)
    with TestCase.captureOnCommitCallbacks(execute=True):
        staff_client.post(url, action, follow=True)
    assert sent == [{"task": "recommendations.tasks.send_due_messages", "kwargs": {"flow": "weekly"}}]
    assert not Message.objects.exists()


def test_the_form_refuses_an_abandonment_window_a_shopper_leaves_before_their_e_mail_may_go(staff_client, settings, db):
    """Left at 21:05 with a 2-hour delay: due at 23:05, quiet until 08:00. With a 12-hour window their views have left
    it by then, so they are never due again and nothing is sent: the form says how long the window must be."""
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_QUIET_HOURS": (21, 8)}
    data = {
        "name": "Come back",
        "slug": "come-back",
        "trigger": "browse_abandonment",
        "window_hours": 12,
        "delay_hours": 2,
        "placement": "similar",
        "size": 4,
        "min_good_items": 2,
        "subject": "",
        "cap_days": 7,
        "best_hour": "unknown",
    }
    page = staff_client.post(reverse("admin:recommendations_flow_add"), data)
    errors = page.context["adminform"].form.errors
    assert set(errors) == {"window_hours"} and "At least 13 hours" in errors["window_hours"][0]
    best = staff_client.post(
        reverse("admin:recommendations_flow_add"), {**data, "window_hours": 24, "best_hour": "true"}
    )
    assert "At least 26 hours" in best.context["adminform"].form.errors["window_hours"][0]
    assert not Flow.objects.exists()
    assert staff_client.post(reverse("admin:recommendations_flow_add"), {**data, "window_hours": 13}).status_code == 302
    assert Flow.objects.get().window_hours == 13
