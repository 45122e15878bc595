"""Deleting a user deletes their events, stored lists and cached blocks; a failing erasure never fails the deletion."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from recommendations import privacy, serving, tracking
from recommendations.models import Event, StoredList
from tests.factories import (
    active_lists,
    make_co_viewed_toys,
    make_small_shop,
    make_user,
    recommendations_with,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop() -> dict[str, Any]:
    """Shoppers co-view a kite and a yo-yo; precomputed, so a refresh has a set to write into."""
    return make_co_viewed_toys()


WRITE_KEY = "k" * 32


def for_you_api(shopper: str) -> dict[str, Any]:
    response = Client().get(
        reverse("recommendations:recommendations", args=["for_you"]),
        {"shopper": shopper},
        HTTP_X_RECOMMENDATIONS_KEY=WRITE_KEY,
    )
    assert response.status_code == 200, response.content
    return response.json()


@override_settings(RECOMMENDATIONS=recommendations_with(WRITE_KEY=WRITE_KEY))
def test_deleting_a_user_deletes_what_the_app_keeps_about_them():
    shop = make_small_shop()
    user, other = make_user("leaving"), make_user("staying")
    me, them = f"u:{user.pk}", f"u:{other.pk}"
    merged = "a" * 32  # a visitor id that joined the account at login, then browsed logged out
    tracking.store_events(
        [
            tracking.build_event("view", user_id=str(user.pk), product_id=str(shop["Pan"].pk)),
            tracking.build_event("view", user_id=str(user.pk), visitor_id=merged, product_id=str(shop["Pot"].pk)),
            tracking.build_event("view", visitor_id=merged, product_id=str(shop["Wok"].pk)),
            tracking.build_event("view", user_id=str(other.pk), product_id=str(shop["Pan"].pk)),
        ]
    )
    personal = [(shop["Rake"], 0.9, f"because:{shop['Pan'].pk}"), (shop["Hoe"], 0.8, f"because:{shop['Pan'].pk}")]
    active = active_lists(for_you={me: personal, them: personal, f"v:{merged}": personal})
    StoredList.objects.create(recommendation_set=active, placement="for_you@run7", subject=me, items=[])
    before = for_you_api(me)  # cached now
    assert {i["reason"] for i in before["items"][:2]} == {f"because:{shop['Pan'].pk}"}
    assert "Because you looked at" in before["items"][0]["reason_text"]

    user.delete()

    assert not Event.objects.filter(user_id=str(user.pk)).exists()
    assert not Event.objects.filter(shopper__in=[me, f"v:{merged}"]).exists()
    assert not Event.objects.filter(visitor_id=merged).exists()
    assert not StoredList.objects.filter(subject__in=[me, f"v:{merged}"]).exists()
    after = for_you_api(me)
    assert not [i for i in after["items"] if i["reason"].startswith("because:")], after
    assert "Because you looked at" not in str(after)
    block = serving.recommend("for_you", shopper=me)
    assert not [i for i in block.items if i.reason.startswith("because:")]
    # Someone else's data is theirs to keep.
    assert Event.objects.filter(user_id=str(other.pk)).count() == 1
    assert StoredList.objects.filter(subject=them).exists()
    assert for_you_api(them)["items"][0]["reason"] == f"because:{shop['Pan'].pk}"


def test_a_failing_erasure_never_fails_the_user_deletion(monkeypatch, caplog):
    user = make_user("leaving")

    def broken(user_id: str) -> None:
        raise RuntimeError("cache down")

    monkeypatch.setattr(privacy, "erase_user", broken)
    user.delete()
    assert "could not erase" in caplog.text
