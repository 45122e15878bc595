"""The links in a sent e-mail, followed as a shopper's mail client and browser follow them: the click is recorded on
the flow's placement and credits a later add to cart; an altered link is refused; the one-click unsubscribe works
without cookies or login and stops the next send; the preference page changes nothing on GET and checks CSRF."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone

from recommendations import tracking
from recommendations.models import EmailConsent, Event, Message
from recommendations.push import tokens
from recommendations.push.sending import send_due_messages
from tests.push.conftest import SITE

pytestmark = pytest.mark.django_db

CLICK_PATH = re.compile(re.escape(SITE) + r"(/e/c/[^/\"<>\s]+/)")


def sent_to(smtp, address):
    (mail,) = smtp.to(address)
    return mail


def unsubscribe_path(mail) -> str:
    return urlsplit(mail.message["List-Unsubscribe"].strip().strip("<>")).path


def test_a_click_is_recorded_on_the_flows_placement_redirects_to_the_product_and_credits_the_cart(
    smtp, push_shop, weekly
):
    send_due_messages()
    ann = str(push_shop.users["ann"].pk)
    row = Message.objects.get(user_id=ann)
    path = CLICK_PATH.findall(sent_to(smtp, "ann@example.com").html)[1]  # the second product: Yo-yo

    response = Client().get(path)  # another device: no cookie, no login

    yoyo = push_shop.products["Yo-yo"]
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert target.path == yoyo.get_absolute_url()
    assert parse_qs(target.query) == {"utm_medium": ["email"], "utm_campaign": ["weekly"]}
    click = Event.objects.get(event_type="click")
    assert (click.user_id, click.product_id, click.placement, click.recommendation_id) == (
        ann,
        str(yoyo.pk),
        "email:weekly",
        row.recommendation_id,
    )
    # Within ATTRIBUTION_HOURS, the add to cart is the flow's.
    cart = tracking.record_event(None, "add_to_cart", user_id=ann, product_id=str(yoyo.pk))
    assert (cart.placement, cart.recommendation_id) == ("email:weekly", row.recommendation_id)


def test_an_altered_link_is_refused_and_records_nothing(smtp, push_shop, weekly):
    send_due_messages()
    path = CLICK_PATH.findall(sent_to(smtp, "ann@example.com").html)[0]
    token = path.split("/")[3]
    # Another product's payload under this link's signature, and a signature cut short.
    other = dataclasses.replace(tokens.read_click(token), product_id=push_shop.pid("Pot"))
    forged = tokens.click_token(other).split(":")[0] + ":" + token.split(":", 1)[1]
    tampered = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
    for bad in (tampered, forged):
        response = Client().get(f"/e/c/{bad}/")
        assert response.status_code == 400
        assert b"This link is not valid" in response.content
    assert not Event.objects.filter(event_type="click").exists()


def test_an_expired_click_link_still_leads_to_the_product_but_counts_nothing(smtp, push_shop, weekly, settings):
    send_due_messages()
    path = CLICK_PATH.findall(sent_to(smtp, "ann@example.com").html)[0]
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_CLICK_MAX_AGE_DAYS": 1}
    later = timezone.now() + timedelta(days=2)
    from unittest import mock

    with mock.patch("django.core.signing.time.time", return_value=later.timestamp()):
        response = Client().get(path)
    assert response.status_code == 302
    assert urlsplit(response["Location"]).path == push_shop.products["Kite"].get_absolute_url()
    assert not Event.objects.filter(event_type="click").exists()


def test_a_preview_link_or_an_unsent_message_counts_no_click(smtp, push_shop, weekly):
    token = tokens.click_token(tokens.Click("f" * 32, push_shop.pid("Kite")))
    assert Client().get(f"/e/c/{token}/").status_code == 302
    assert not Event.objects.filter(event_type="click").exists()


def test_one_click_unsubscribe_without_cookies_stops_the_next_send(smtp, push_shop, weekly):
    now = timezone.now()
    send_due_messages(now=now)
    ann = str(push_shop.users["ann"].pk)
    mail_client = Client(enforce_csrf_checks=True)  # a mail provider's POST: no cookie, no CSRF token, no login
    response = mail_client.post(unsubscribe_path(sent_to(smtp, "ann@example.com")), {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    consent = EmailConsent.objects.get(user_id=ann)
    assert consent.opted_in is False and consent.opted_out_via == "weekly"
    smtp.clear()
    summary = send_due_messages(now=now + timedelta(days=8))  # a new week, past every cap
    assert smtp.to("ann@example.com") == []
    assert [r.to for r in smtp.received] == [["bob@example.com"]]
    assert summary["flows"]["weekly"]["not_consented"] == 0  # ann left the audience (she opted out)
    assert summary["flows"]["weekly"]["due"] == 2


def test_the_preference_page_changes_nothing_on_get_and_saves_with_csrf(smtp, push_shop, weekly, browse):
    send_due_messages()
    ann = str(push_shop.users["ann"].pk)
    path = unsubscribe_path(sent_to(smtp, "ann@example.com"))
    browser = Client(enforce_csrf_checks=True)

    page = browser.get(path)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="weekly" checked' in html and 'value="browse" checked' in html
    assert EmailConsent.objects.get(user_id=ann).opted_in  # a link checker's GET unsubscribes nobody

    assert browser.post(path, {"action": "save", "flows": ["browse"]}).status_code == 403  # no CSRF token
    token = browser.cookies["csrftoken"].value
    saved = browser.post(path, {"action": "save", "flows": ["browse"], "csrfmiddlewaretoken": token})
    assert saved.status_code == 200 and b"Saved" in saved.content
    row = EmailConsent.objects.get(user_id=ann)
    assert row.opted_in and row.unsubscribed_flows == ["weekly"]

    smtp.clear()
    send_due_messages(now=timezone.now() + timedelta(days=8))
    assert smtp.to("ann@example.com") == []  # she left the weekly flow; bob still gets it
    assert len(smtp.to("bob@example.com")) == 1

    browser.post(path, {"action": "all", "csrfmiddlewaretoken": token})
    assert EmailConsent.objects.get(user_id=ann).opted_in is False


def test_a_bad_unsubscribe_link_is_refused_and_an_expired_one_click_is_honoured(push_shop, weekly, settings):
    ann = str(push_shop.users["ann"].pk)
    # A link of the first format (it named the shopper and the flow): e-mails in inboxes still carry them.
    token = signing.dumps({"u": ann, "f": "weekly"}, salt=tokens.UNSUBSCRIBE_SALT, compress=True)
    assert Client().get(f"/e/u/{token[:-2]}xx/").status_code == 400
    assert Client().post(f"/e/u/{token[:-2]}xx/", {"List-Unsubscribe": "One-Click"}).status_code == 400
    assert EmailConsent.objects.get(user_id=ann).opted_in

    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "EMAIL_UNSUBSCRIBE_MAX_AGE_DAYS": 1}
    from unittest import mock

    with mock.patch("django.core.signing.time.time", return_value=(timezone.now() + timedelta(days=3)).timestamp()):
        assert Client().get(f"/e/u/{token}/").status_code == 400  # the preference page needs a fresh link
        assert Client().post(f"/e/u/{token}/", {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert EmailConsent.objects.get(user_id=ann).opted_in is False


def test_tokens_are_djangos_own_byte_for_byte_and_follow_a_new_secret(monkeypatch, settings):
    """The sender keeps the derived HMAC key and the second's base-62 stamp; the token must stay what
    django.core.signing makes, or every link in an e-mail would be refused by `signing.loads`."""
    import time

    monkeypatch.setattr(time, "time", lambda: 1_765_000_000.4)
    click = tokens.Click("9" * 32, "kite-42")
    expected = signing.dumps({"r": click.recommendation_id, "p": click.product_id}, salt=tokens.CLICK_SALT)
    assert tokens.click_token(click) == expected
    assert tokens.unsubscribe_token("9" * 32) == signing.dumps({"m": "9" * 32}, salt=tokens.UNSUBSCRIBE_SALT)
    monkeypatch.setattr(time, "time", lambda: 1_765_000_061.0)  # a minute on: a new stamp, not the kept one
    later = tokens.click_token(click)
    assert later != expected
    assert tokens.read_click(later, expired_ok=True) == click
    settings.SECRET_KEY = "another-secret-" + "x" * 40  # a rotated key signs with the new one at once
    rotated = tokens.click_token(click)
    assert rotated == signing.dumps({"r": click.recommendation_id, "p": click.product_id}, salt=tokens.CLICK_SALT)
    assert rotated != later
