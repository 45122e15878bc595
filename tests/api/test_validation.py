"""One visitor's timestamp cannot stop learning: the ingest API refuses events outside the time window, naming each,
and the window follows the setting. Real PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from recommendations.models import Event, ProductProfile

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"),
]


VISITOR = "0123456789abcdef0123456789abcdef"


WRITE_KEY = "s3cret-write-key-for-tests"


# The request of the issue: PostgreSQL stores it as 0001-12-31 19:00:00+00 BC, which Python cannot read back.
YEAR_ONE = "0001-01-01T00:00:00+05:00"


@pytest.fixture
def browser(client: Client) -> Client:
    client.cookies[settings.RECOMMENDATIONS.get("VISITOR_COOKIE_NAME", "rec_vid")] = VISITOR
    return client


@pytest.fixture
def products() -> list[str]:
    ids = ["p1", "p2"]
    ProductProfile.objects.bulk_create(ProductProfile(product_id=pid, name=pid) for pid in ids)
    return ids


def post(client: Client, events: list, **kwargs):
    return client.post(
        reverse("recommendations:ingest"),
        data=json.dumps({"events": events}),
        content_type="application/json",
        **kwargs,
    )


def settings_with(**override):
    return override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, **override})


def test_the_issues_request_from_a_browser_is_a_400_naming_the_event_and_its_timestamp(browser, products):
    response = post(browser, [{"event_type": "view", "product_id": "p1", "timestamp": YEAR_ONE}])

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["accepted"] == 0
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "timestamp")]
    assert not Event.objects.exists()


def test_the_write_key_batch_stores_the_good_events_and_names_each_out_of_window_one(client, products):
    now = timezone.now()
    too_old = (now - timedelta(days=3650 + 2)).isoformat()
    inside = (now - timedelta(days=3650 - 2)).isoformat()
    events = [
        {"event_type": "view", "product_id": "p1", "user_id": "7", "timestamp": YEAR_ONE},
        {"event_type": "view", "product_id": "p1", "user_id": "7", "timestamp": inside, "event_id": "kept"},
        {"event_type": "view", "product_id": "p2", "user_id": "7", "timestamp": too_old},
        {"event_type": "view", "product_id": "p2", "user_id": "7", "timestamp": -62135596800},  # 0001-01-01 UTC
    ]
    with settings_with(WRITE_KEY=WRITE_KEY):
        response = post(client, events, headers={"X-Recommendations-Key": WRITE_KEY})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "timestamp"), (2, "timestamp"), (3, "timestamp")]
    assert "EVENT_MAX_AGE_DAYS" in body["errors"][1]["message"]
    assert list(Event.objects.values_list("event_id", flat=True)) == ["kept"]


def test_the_window_follows_the_setting(browser, products):
    ten_days_ago = (timezone.now() - timedelta(days=10)).isoformat()
    with settings_with(EVENT_MAX_AGE_DAYS=5):
        refused = post(browser, [{"event_type": "view", "product_id": "p1", "timestamp": ten_days_ago}])
    accepted = post(browser, [{"event_type": "view", "product_id": "p1", "timestamp": ten_days_ago}])
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "timestamp"
    assert accepted.status_code == 200 and Event.objects.count() == 1
