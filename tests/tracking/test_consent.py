"""Consent, with the app's own default (CONSENT_REQUIRED: nobody is tracked before agreeing): no event, impression or
cookie of ours without it, non-personal blocks and an API that says so; the banner's and the account switch's answer,
kept on the account across devices under a keyed hash; GPC; an opt-out that stops at once and may erase; servers
and imports that name a user who refused; a host's own check."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from recommendations import tracking
from recommendations.conf import check_settings
from recommendations.models import ConsentChoice, ErasureRequest, Event
from recommendations.tracking.consent import choice_subject
from tests.factories import make_co_viewed_toys, make_event, make_user, recommendations_with

pytestmark = pytest.mark.django_db

WRITE_KEY = "w" * 32
VISITOR = "rec_vid"
CONSENT = "rec_consent"


@pytest.fixture(autouse=True)
def _opt_in(settings: Any) -> None:
    """The app's shipped default, not the suite's opt-out (tests/settings.py)."""
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "CONSENT_REQUIRED": True, "WRITE_KEY": WRITE_KEY}


@pytest.fixture
def toys() -> dict[str, Any]:
    return make_co_viewed_toys()


def product_page(client: Client, product: Any, **headers: Any) -> Any:
    response = client.get(reverse("product_detail", args=[product.slug]), **headers)
    assert response.status_code == 200
    return response


def answer(client: Client, personalised: str, next_url: str = "/") -> Any:
    return client.post(reverse("recommendations:consent"), {"personalised": personalised, "next": next_url})


def test_without_consent_nothing_is_stored_no_cookie_is_set_and_blocks_are_shared_lists(toys):
    before = Event.objects.count()
    client = Client()
    page = product_page(client, toys["Kite"])
    html = page.content.decode()

    assert Event.objects.count() == before  # no view, no impression
    assert VISITOR not in page.cookies
    assert 'data-rec-placement="similar"' in html  # the product's similar list still shows
    assert "data-rec-consent" in html  # the banner asks
    home = client.get("/").content.decode()
    assert 'data-rec-placement="trending"' in home or 'data-rec-placement="for_you"' in home
    assert Event.objects.count() == before


def test_saying_yes_starts_tracking_and_the_banner_goes(toys):
    client = Client()
    response = answer(client, "1", next_url=reverse("product_detail", args=[toys["Kite"].slug]))
    assert response.status_code == 302 and response["Location"].endswith(toys["Kite"].slug + "/")
    assert response.cookies[CONSENT].value == "granted"
    assert not response.cookies[CONSENT]["httponly"]  # a page's script may read the answer, never an id
    visitor = response.cookies[VISITOR].value  # given as soon as they agreed

    page = product_page(client, toys["Kite"])
    assert Event.objects.filter(visitor_id=visitor, event_type="view", product_id=str(toys["Kite"].pk)).exists()
    assert "data-rec-consent" not in page.content.decode()


def test_saying_no_stops_tracking_at_once_and_takes_the_visitor_cookie_back(toys):
    client = Client()
    visitor = answer(client, "1").cookies[VISITOR].value
    product_page(client, toys["Kite"])
    kept = Event.objects.filter(visitor_id=visitor).count()
    assert kept >= 1

    response = answer(client, "0")
    assert response.cookies[CONSENT].value == "denied"
    assert response.cookies[VISITOR]["max-age"] == 0  # deleted on the way out
    product_page(client, toys["Yo-yo"])
    assert Event.objects.filter(visitor_id=visitor).count() == kept  # history kept (ERASE_ON_OPT_OUT is off)
    assert not Event.objects.filter(product_id=str(toys["Yo-yo"].pk), visitor_id=visitor).exists()
    assert ErasureRequest.objects.count() == 0


def test_with_erase_on_opt_out_saying_no_erases_the_history(settings, toys):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "ERASE_ON_OPT_OUT": True}
    client = Client()
    visitor = answer(client, "1").cookies[VISITOR].value
    product_page(client, toys["Kite"])
    others = Event.objects.exclude(visitor_id=visitor).count()
    assert Event.objects.filter(visitor_id=visitor).exists()

    answer(client, "0")
    assert not Event.objects.filter(visitor_id=visitor).exists()
    assert Event.objects.count() == others
    assert ErasureRequest.objects.get().via == "opt_out"


def test_global_privacy_control_is_a_no_unless_the_shopper_said_yes_here(settings, toys):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "CONSENT_REQUIRED": False}  # opt-out: tracked by default
    views = Event.objects.filter(event_type="view")
    before = views.count()
    plain = product_page(Client(), toys["Kite"])
    assert VISITOR in plain.cookies and views.count() == before + 1

    gpc = Client(headers={"Sec-GPC": "1"})
    page = product_page(gpc, toys["Kite"])
    assert VISITOR not in page.cookies and views.count() == before + 1
    assert "data-rec-consent" not in page.content.decode()  # the browser already answered: no banner

    answer(gpc, "1")
    product_page(gpc, toys["Kite"])
    assert views.count() == before + 2


def test_a_signed_in_shoppers_answer_holds_on_every_device_and_names_nobody(toys):
    user = make_user("careful")
    laptop = Client()
    laptop.force_login(user)
    answer(laptop, "0")
    choice = ConsentChoice.objects.get()
    assert choice.personalised is False and choice.subject == choice_subject(user.pk)
    assert len(choice.subject) == 64 and choice.subject not in (str(user.pk), f"u:{user.pk}")

    phone = Client()
    phone.cookies[CONSENT] = "granted"  # this browser once said yes, before they signed in
    phone.force_login(user)
    page = product_page(phone, toys["Kite"])
    assert not Event.objects.filter(user_id=str(user.pk)).exists()
    assert VISITOR not in page.cookies
    switch = phone.get(reverse("account")).content.decode()
    assert 'data-personalised="0"' in switch

    answer(phone, "1")
    product_page(phone, toys["Kite"])
    assert Event.objects.filter(user_id=str(user.pk), event_type="view").exists()
    assert ConsentChoice.objects.get().personalised is True

    user.delete()
    assert not ConsentChoice.objects.exists()


def test_logging_in_with_an_opt_out_on_the_account_merges_nothing(toys):
    user = make_user("private")
    ConsentChoice.objects.create(subject=choice_subject(user.pk), personalised=False)
    client = Client()
    visitor = answer(client, "1").cookies[VISITOR].value
    product_page(client, toys["Kite"])
    response = client.post(reverse("login"), {"username": "private", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert not Event.objects.filter(user_id=str(user.pk)).exists()
    assert Event.objects.filter(visitor_id=visitor, user_id="").exists()
    assert response.cookies[VISITOR]["max-age"] == 0


def test_servers_and_imports_never_store_a_user_who_said_no(toys, tmp_path):
    refused, willing = make_user("no"), make_user("yes")
    ConsentChoice.objects.create(subject=choice_subject(refused.pk), personalised=False)
    kite = str(toys["Kite"].pk)

    assert tracking.record_event(None, "view", user_id=str(refused.pk), product_id=kite) is None
    assert tracking.record_event(None, "view", user_id=str(willing.pk), product_id=kite) is not None

    body = {
        "events": [
            {"event_id": "e-no", "event_type": "view", "user_id": str(refused.pk), "product_id": kite},
            {"event_id": "e-yes", "event_type": "view", "user_id": str(willing.pk), "product_id": kite},
        ]
    }
    response = Client().post(
        reverse("recommendations:ingest"),
        json.dumps(body),
        content_type="application/json",
        HTTP_X_RECOMMENDATIONS_KEY=WRITE_KEY,
    )
    assert response.status_code == 200, response.content
    assert set(Event.objects.filter(event_id__in=["e-no", "e-yes"]).values_list("event_id", flat=True)) == {"e-yes"}

    rows = tmp_path / "events.jsonl"
    rows.write_text(
        "\n".join(
            json.dumps(
                {
                    "event_id": f"f-{who}",
                    "event_type": "view",
                    "user_id": str(u.pk),
                    "product_id": kite,
                    "timestamp": timezone.now().isoformat(),
                }
            )
            for who, u in (("no", refused), ("yes", willing))
        )
        + "\n"
    )
    out = StringIO()
    call_command("import_events", str(rows), stdout=out)
    assert "1 of users who refused tracking not stored" in out.getvalue(), out.getvalue()
    assert not Event.objects.filter(user_id=str(refused.pk)).exists()
    assert Event.objects.filter(event_id="f-yes").exists()


def test_the_api_says_when_a_block_is_not_personal_and_a_browser_batch_is_not_kept(toys):
    client = Client()
    url = reverse("recommendations:recommendations", args=["similar"])
    block = client.get(url, {"product": str(toys["Kite"].pk)}).json()
    assert block["personalised"] is False and block["items"]

    before = Event.objects.count()
    sent = client.post(
        reverse("recommendations:ingest"),
        json.dumps({"events": [{"event_type": "view", "product_id": str(toys["Kite"].pk)}]}),
        content_type="application/json",
    )
    assert sent.status_code == 200 and sent.json()["tracked"] is False and sent.json()["accepted"] == 0
    bad = client.post(
        reverse("recommendations:ingest"),
        json.dumps({"events": [{"event_type": "view"}]}),
        content_type="application/json",
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "product_id"  # refused as for anyone
    assert Event.objects.count() == before

    answer(client, "1")
    assert client.get(url, {"product": str(toys["Kite"].pk)}).json()["personalised"] is True
    assert client.get(reverse("recommendations:consent")).json() == {
        "personalised": True,
        "source": "cookie",
        "asked": True,
    }


def test_the_consent_view_refuses_a_bad_answer_a_foreign_next_and_a_forged_post(toys):
    client = Client()
    bad = client.post(reverse("recommendations:consent"), {"personalised": "maybe"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "personalised"
    assert CONSENT not in bad.cookies

    foreign = answer(client, "1", next_url="https://evil.example/")
    assert foreign.status_code == 200 and foreign.json()["personalised"] is True  # no open redirect

    forged = Client(enforce_csrf_checks=True).post(reverse("recommendations:consent"), {"personalised": "1"})
    assert forged.status_code == 403 and CONSENT not in forged.cookies


def shoppers_own_check(request: Any) -> bool:
    return request.headers.get("X-Test-Consent") == "ok"


def broken_check(request: Any) -> bool:
    raise RuntimeError("the consent platform is down")


def test_a_hosts_own_check_decides_and_a_failing_one_tracks_nobody(settings, toys, caplog):
    path = f"{__name__}.shoppers_own_check"
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "CONSENT_CHECK": path}
    views = Event.objects.filter(event_type="view")
    before = views.count()
    product_page(Client(), toys["Kite"])
    product_page(Client(headers={"X-Test-Consent": "ok"}), toys["Kite"])
    assert views.count() == before + 1

    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "CONSENT_CHECK": f"{__name__}.broken_check"}
    product_page(Client(headers={"X-Test-Consent": "ok"}), toys["Kite"])
    assert views.count() == before + 1
    assert "consent check" in caplog.text


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"CONSENT_CHECK": "nowhere.to.be.found"}, "CONSENT_CHECK"),
        ({"CONSENT_CHECK": "recommendations.conf.DEFAULTS"}, "not callable"),
        ({"CONSENT_REQUIRED": "yes"}, "CONSENT_REQUIRED"),
        ({"CONSENT_COOKIE_NAME": "rec_vid"}, "CONSENT_COOKIE_NAME"),
    ],
)
def test_a_consent_setting_that_cannot_work_fails_the_check(values, problem):
    with override_settings(RECOMMENDATIONS=recommendations_with(**values)):
        errors = [e for e in check_settings() if e.id == "recommendations.E012"]
    assert errors and problem in errors[0].msg


def test_an_existing_visitor_cookie_is_taken_back_from_a_browser_without_consent(toys):
    client = Client()
    client.cookies[VISITOR] = "a" * 32
    make_event("view", shopper="v:" + "a" * 32, product_id=str(toys["Kite"].pk))
    page = product_page(client, toys["Yo-yo"])
    assert page.cookies[VISITOR]["max-age"] == 0
    assert 'data-rec-placement="recently_viewed"' not in page.content.decode()  # their history is not read


def test_the_demo_shopper_said_yes_on_their_account_so_a_new_browser_personalises_at_once(toys):
    call_command("create_demo_logins", "--force", stdout=StringIO())
    client = Client()
    assert client.login(username="shopper", password="shopper-demo-password")
    assert client.get(reverse("recommendations:consent")).json() == {
        "personalised": True,
        "source": "account",
        "asked": True,
    }
    assert "data-rec-consent" not in client.get("/").content.decode()


def test_staff_see_how_many_said_yes_or_no_but_not_who(admin_user):
    users = [make_user(f"answer{n}") for n in range(3)]
    for user, answer in zip(users, (True, False, False), strict=True):
        ConsentChoice.objects.create(subject=choice_subject(user.pk), personalised=answer)
    staff = Client()
    staff.force_login(admin_user)
    page = staff.get(reverse("admin:recommendations_consentchoice_changelist"), {"personalised__exact": "0"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "2 consent choices" in html
    assert all(f">{user.username}<" not in html for user in users)
    assert staff.get(reverse("admin:recommendations_consentchoice_add")).status_code == 403
