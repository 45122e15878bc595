"""A flow's links name no shopper (old links still work), and its analytics in the admin: an e-mail click followed
by a real add to cart and checkout in the shop is credited to email:<slug> through the roll-up, next to what the
sender did (sent, skipped by cap, skipped weak, failed) and who left (one-click, preference page), on the page, in
its charts, in the CSV and in the flows list."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recommendations import analytics
from recommendations.models import EmailConsent, Event, Flow, Message, Unsubscribe
from recommendations.push import analytics as flow_analytics
from recommendations.push import tokens
from recommendations.push.sending import send_due_messages
from tests.factories import make_user
from tests.push.conftest import SITE

pytestmark = pytest.mark.django_db

CLICK_PATH = re.compile(re.escape(SITE) + r"/e/c/([^/\"<>\s]+)/")


def unsubscribe_path(mail) -> str:
    return urlsplit(mail.message["List-Unsubscribe"].strip().strip("<>")).path


def payload(token: str, salt: str) -> dict:
    return signing.loads(token, salt=salt)


@pytest.fixture
def staff(db):
    return make_user("boss", is_staff=True, is_superuser=True)


def test_links_name_the_email_and_product_but_no_shopper(smtp, push_shop, weekly):
    send_due_messages()
    ann = str(push_shop.users["ann"].pk)
    row = Message.objects.get(user_id=ann)
    (mail,) = smtp.to("ann@example.com")
    click_tokens = CLICK_PATH.findall(mail.html)
    # A payload is only signed, so anyone can read it: exactly the e-mail's recommendation id and the product.
    assert [payload(t, tokens.CLICK_SALT) for t in click_tokens] == [
        {"r": row.recommendation_id, "p": p} for p in row.products
    ]
    unsubscribe = unsubscribe_path(mail).split("/")[3]
    assert payload(unsubscribe, tokens.UNSUBSCRIBE_SALT) == {"m": row.recommendation_id}


def test_first_format_links_in_old_emails_still_count_and_unsubscribe(smtp, push_shop, weekly):
    send_due_messages()
    ann, bob = str(push_shop.users["ann"].pk), str(push_shop.users["bob"].pk)
    row = Message.objects.get(user_id=ann)
    kite = push_shop.pid("Kite")
    old = signing.dumps(
        {"u": ann, "f": "weekly", "r": row.recommendation_id, "p": kite}, salt=tokens.CLICK_SALT, compress=True
    )

    response = Client().get(f"/e/c/{old}/")

    assert (
        response.status_code == 302
        and urlsplit(response["Location"]).path == push_shop.products["Kite"].get_absolute_url()
    )
    click = Event.objects.get(event_type="click")
    assert (click.user_id, click.placement, click.recommendation_id) == (ann, "email:weekly", row.recommendation_id)
    # An old token naming another shopper than the e-mail's counts nothing (it leads to the product all the same).
    forged = signing.dumps({"u": bob, "f": "weekly", "r": row.recommendation_id, "p": kite}, salt=tokens.CLICK_SALT)
    assert Client().get(f"/e/c/{forged}/").status_code == 302
    assert Event.objects.filter(event_type="click").count() == 1

    old_unsubscribe = signing.dumps({"u": bob, "f": "weekly"}, salt=tokens.UNSUBSCRIBE_SALT, compress=True)
    assert Client().post(f"/e/u/{old_unsubscribe}/", {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert EmailConsent.objects.get(user_id=bob).opted_in is False
    assert EmailConsent.objects.get(user_id=ann).opted_in is True


def test_a_link_naming_no_sent_email_changes_nothing(smtp, push_shop, weekly):
    send_due_messages()
    unknown = tokens.unsubscribe_token("0" * 32)  # a preview's link, or an e-mail erased with its shopper
    page = Client().get(f"/e/u/{unknown}/")
    assert page.status_code == 400 and b"This link is not valid" in page.content
    # A mail client's one-click must not fail: nobody is e-mailed under this link, and that is what it says.
    one_click = Client().post(f"/e/u/{unknown}/", {"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and b"You are unsubscribed" in one_click.content
    assert EmailConsent.objects.filter(opted_in=False).count() == 0
    assert not Unsubscribe.objects.exists()


def test_a_flow_that_sent_e_mails_cannot_be_deleted_so_their_unsubscribe_links_keep_working(smtp, push_shop, weekly):
    from django.db.models import ProtectedError

    send_due_messages()
    sent = Message.objects.filter(flow=weekly, status=Message.Status.SENT).first()
    assert sent is not None
    with pytest.raises(ProtectedError):
        weekly.delete()
    link = tokens.unsubscribe_token(sent.recommendation_id)
    assert Client().post(f"/e/u/{link}/", {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert EmailConsent.objects.get(user_id=sent.user_id).opted_in is False


def test_a_click_and_a_later_checkout_are_the_flows_with_sends_skips_and_leaves_in_its_analytics(
    smtp, push_shop, weekly, staff
):
    smtp.refuse.add("bob@example.com")  # bob's e-mail fails; cy's list is weak (best sellers only)
    now = timezone.now()
    send_due_messages(now=now)
    monthly = Flow.objects.create(
        name="Monthly", slug="monthly", trigger=Flow.Trigger.WEEKLY_PICKS, size=4, enabled=True
    )
    send_due_messages(flow="monthly", now=now)  # within EMAIL_MIN_HOURS_BETWEEN of ann's e-mail: capped
    ann = push_shop.users["ann"]
    (mail,) = smtp.to("ann@example.com")
    row = Message.objects.get(user_id=str(ann.pk), flow=weekly)

    # The shopper opens the e-mail on another device, follows the second link (Yo-yo), signs in, buys it.
    shopper = Client()
    landing = shopper.get(f"/e/c/{CLICK_PATH.findall(mail.html)[1]}/")
    yoyo = push_shop.products["Yo-yo"]
    assert urlsplit(landing["Location"]).path == yoyo.get_absolute_url()
    shopper.force_login(ann)
    shopper.get(landing["Location"])
    assert shopper.post(reverse("cart_add", args=[yoyo.pk]), {"quantity": 2}).status_code == 302
    shopper.post(reverse("checkout"), {"full_name": "Ann", "email": "ann@example.com", "address": "1 Road"})
    bought = Event.objects.get(event_type="purchase")
    assert (bought.placement, bought.recommendation_id, bought.value) == (
        "email:weekly",
        row.recommendation_id,
        yoyo.price * 2,
    )

    # She leaves the flow on the preference page, then every e-mail with the one-click POST (twice: counted once).
    page = Client()
    path = unsubscribe_path(mail)
    page.get(path)
    page.post(path, {"action": "save", "flows": ["monthly"], "csrfmiddlewaretoken": page.cookies["csrftoken"].value})
    for _ in range(2):
        Client().post(path, {"List-Unsubscribe": "One-Click"})
    assert sorted(Unsubscribe.objects.values_list("flow__slug", "kind")) == [
        ("weekly", "flow"),
        ("weekly", "one_click"),
    ]

    today = analytics.local_today()
    analytics.rebuild_days(today, today)
    weekly_day = flow_analytics.flow_days(weekly, today, today)[today]
    assert (weekly_day.sent, weekly_day.failed, weekly_day.skipped_weak, weekly_day.skipped_cap) == (1, 1, 1, 0)
    assert (weekly_day.clicks, weekly_day.add_to_carts, weekly_day.orders, weekly_day.revenue) == (
        1,
        1,
        1,
        yoyo.price * 2,
    )
    assert weekly_day.click_rate == 1.0
    assert (weekly_day.unsubscribes_one_click, weekly_day.unsubscribes_page) == (1, 1)
    monthly_day = flow_analytics.flow_days(monthly, today, today)[today]
    assert (monthly_day.sent, monthly_day.skipped_cap, monthly_day.clicks) == (
        0,
        1,
        0,
    )  # ann capped; bob failed: not counted

    admin = Client()
    admin.force_login(staff)
    url = reverse("admin:recommendations_flow_analytics", args=[weekly.pk])
    response = admin.get(url, {"from": today.isoformat(), "to": today.isoformat()})
    assert response.status_code == 200
    html = response.content.decode()
    totals = re.search(r'<table id="rec-flow-totals">.*?</table>', html, re.S).group(0)
    cells = re.findall(r'<td class="num"[^>]*>([^<]*)</td>', totals)
    # sent, skipped cap, skipped weak, failed, clicks, click rate, add to carts, orders, revenue, unsubscribes
    assert cells == ["1", "0", "1", "1", "1", "100%", "1", "1", f"{yoyo.price * 2:,.2f}", "2"]
    for chart in (
        "rec-chart-click-rate",
        "rec-chart-sending",
        "rec-chart-clicks",
        "rec-chart-revenue",
        "rec-chart-unsubscribes",
    ):
        assert re.search(rf'<figure id="{chart}"[^>]*>\s*<svg', html), chart
    crumbs = re.search(r'<div class="breadcrumbs">(.*?)</div>', html, re.S).group(1)
    change = reverse("admin:recommendations_flow_change", args=[weekly.pk])
    assert f'<a href="{change}">{weekly}</a>' in crumbs and crumbs.rstrip().endswith("Analytics")

    export = admin.get(
        reverse("admin:recommendations_flow_analytics_export", args=[weekly.pk]),
        {"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()},
    )
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [r["day"] for r in rows] == [(today - timedelta(days=1)).isoformat(), today.isoformat()]
    assert rows[0]["sent"] == "0" and rows[0]["click_rate"] == ""
    last = rows[1]
    assert (last["sent"], last["clicks"], last["click_rate"], last["orders"], last["unsubscribes"]) == (
        "1",
        "1",
        "1.000000",
        "1",
        "2",
    )
    assert Decimal(last["revenue"]) == yoyo.price * 2

    # The flows list: clicks and orders of the last 7 days, the clicks linking to the analytics.
    listing = admin.get(reverse("admin:recommendations_flow_changelist")).content.decode()
    weekly_row = re.search(r"<tr>(?:(?!</tr>).)*>weekly<(?:(?!</tr>).)*</tr>", listing, re.S).group(0)
    assert f'<a href="{url}">1</a>' in weekly_row
    assert re.search(r'class="field-orders_7_days">1<', weekly_row)
    # And the flow's page links to the analytics.
    assert url in admin.get(reverse("admin:recommendations_flow_change", args=[weekly.pk])).content.decode()


def test_a_bad_day_range_is_a_400_that_says_which_field(push_shop, weekly, staff):
    admin = Client()
    admin.force_login(staff)
    page = admin.get(reverse("admin:recommendations_flow_analytics", args=[weekly.pk]), {"from": "2026-13-01"})
    assert page.status_code == 400 and "is not a date for “from”" in page.content.decode()
    export = admin.get(
        reverse("admin:recommendations_flow_analytics_export", args=[weekly.pk]),
        {"from": "2026-02-01", "to": "2026-01-01"},
    )
    assert export.status_code == 400 and "is after" in export.content.decode()
    assert admin.get(reverse("admin:recommendations_flow_analytics", args=[weekly.pk + 999])).status_code == 404


def test_staff_without_view_permission_cannot_read_a_flows_analytics(push_shop, weekly):
    clerk = make_user("clerk", is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get(reverse("admin:recommendations_flow_analytics", args=[weekly.pk])).status_code == 403
    assert client.get(reverse("admin:recommendations_flow_analytics_export", args=[weekly.pk])).status_code == 403
