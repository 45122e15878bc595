"""The demo shop's "Recommendations by e-mail" switch on the account page, and the demo shopper's yes to it.

The switch is the shop's side of the push consent (recommendations.push.consent): what it records is what decides
whether a flow may e-mail the shopper, so the tests check `may_email` / the send's audience, not only the row.
"""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from recommendations.models import EmailConsent, Flow
from recommendations.push.consent import audience, may_email, set_email_consent
from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


@pytest.fixture
def shopper():
    return make_user("emma", password=PASSWORD, email="emma@example.com")


@pytest.fixture
def signed_in(client: Client, shopper) -> Client:
    assert client.login(username="emma", password=PASSWORD)
    return client


def switch(page: str) -> str:
    """The switch's form as the account page renders it."""
    start = page.index('id="email-recommendations"')
    return page[start : page.index("</form>", start)]


def test_the_account_page_offers_the_switch_off_until_the_shopper_says_yes(signed_in, shopper):
    page = signed_in.get(reverse("account")).content.decode()

    form = switch(page)
    assert "Recommendations by e-mail" in form
    assert 'data-email-recommendations="0"' in form
    assert 'name="email_recommendations" value="1"' in form and 'value="0"' not in form
    assert 'name="csrfmiddlewaretoken"' in form
    assert not EmailConsent.objects.exists()  # showing the page records nothing
    assert not may_email(str(shopper.pk), "weekly")


def test_saying_yes_lets_flows_email_them_and_no_stops_them(signed_in, shopper):
    Flow.objects.create(name="Weekly", slug="weekly", trigger=Flow.Trigger.WEEKLY_PICKS, enabled=True)

    response = signed_in.post(reverse("account_email"), {"email_recommendations": "1"}, follow=True)
    assert response.redirect_chain == [(reverse("account"), 302)]
    assert may_email(str(shopper.pk), "weekly")
    assert list(audience()) == [str(shopper.pk)]
    page = response.content.decode()
    assert "We will e-mail you recommendations" in page
    assert 'data-email-recommendations="1"' in switch(page)
    assert 'name="email_recommendations" value="0"' in switch(page)

    response = signed_in.post(reverse("account_email"), {"email_recommendations": "0"}, follow=True)
    assert not may_email(str(shopper.pk), "weekly")
    assert list(audience()) == []
    assert 'data-email-recommendations="0"' in switch(response.content.decode())
    row = EmailConsent.objects.get(user_id=str(shopper.pk))
    assert not row.opted_in and row.opted_out_at is not None


def test_an_unsubscribe_from_an_email_shows_as_off_on_the_account_page(signed_in, shopper):
    set_email_consent(shopper.pk, True)
    assert 'data-email-recommendations="1"' in switch(signed_in.get(reverse("account")).content.decode())
    set_email_consent(shopper.pk, False, via="weekly")  # what the one-click unsubscribe link records
    assert 'data-email-recommendations="0"' in switch(signed_in.get(reverse("account")).content.decode())


@pytest.mark.parametrize("value", ["", "yes", "2", None])
def test_a_bad_answer_is_a_400_naming_the_field_and_changes_nothing(signed_in, shopper, value):
    set_email_consent(shopper.pk, True)
    data = {} if value is None else {"email_recommendations": value}

    response = signed_in.post(reverse("account_email"), data)

    assert response.status_code == 400
    assert "email_recommendations" in response.content.decode()
    assert may_email(str(shopper.pk), "weekly")


def test_the_switch_needs_a_signed_in_shopper_a_post_and_a_csrf_token(shopper):
    anonymous = Client()
    response = anonymous.post(reverse("account_email"), {"email_recommendations": "1"})
    assert response.status_code == 302 and reverse("login") in response["Location"]
    assert not EmailConsent.objects.exists()

    strict = Client(enforce_csrf_checks=True)
    assert strict.login(username="emma", password=PASSWORD)
    assert strict.post(reverse("account_email"), {"email_recommendations": "1"}).status_code == 403
    assert strict.get(reverse("account_email")).status_code == 405
    assert not may_email(str(shopper.pk), "weekly")


def test_a_shopper_without_an_address_is_told_none_would_be_sent(client):
    make_user("noaddress", password=PASSWORD, email="")
    assert client.login(username="noaddress", password=PASSWORD)
    assert "We have no e-mail address for you yet" in switch(client.get(reverse("account")).content.decode())


def test_the_demo_shopper_has_said_yes_to_email_and_has_an_address(settings):
    settings.DEBUG = True  # create_demo_logins refuses to run with DEBUG off
    User = get_user_model()
    User.objects.create(username="shopper", email="")  # an existing account without an address gets the demo's

    call_command("create_demo_logins", stdout=io.StringIO())
    shopper = User.objects.get(username="shopper")
    assert shopper.email == "shopper@example.com"
    assert may_email(str(shopper.pk), "weekly")
    staff = User.objects.get(username="staff")
    assert not may_email(str(staff.pk), "weekly")  # only the shopper said yes

    set_email_consent(shopper.pk, False)  # they unsubscribed while trying the demo; a reset says yes again
    shopper.email = "mine@example.com"
    shopper.save()
    call_command("create_demo_logins", stdout=io.StringIO())
    assert may_email(str(shopper.pk), "weekly")
    assert User.objects.get(pk=shopper.pk).email == "mine@example.com"  # an address they have is kept
