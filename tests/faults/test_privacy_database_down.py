"""The privacy endpoints while PostgreSQL cannot be reached: a 503 with Retry-After naming no field, never a 500, so
the shop's back end sends the request again; the retry does the whole job (an erasure is idempotent).

Before: both answered 500. A real connection to a closed port (`database_unreachable`); the shared server is never
stopped.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from recommendations.models import Event
from recommendations.tracking import build_event, store_events
from tests.factories import database_unreachable

pytestmark = [
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"),
    pytest.mark.django_db,
]

WRITE_KEY = "s3cret-write-key-for-fault-tests"
VISITOR = f"{42:032x}"


@pytest.fixture(autouse=True)
def write_key(settings: Any) -> None:
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "WRITE_KEY": WRITE_KEY}


def post(name: str) -> Any:
    return Client().post(
        reverse(f"recommendations:{name}"),
        data=json.dumps({"visitor_ids": [VISITOR]}),
        content_type="application/json",
        headers={"X-Recommendations-Key": WRITE_KEY},
    )


@pytest.mark.parametrize("name", ["privacy_erase", "privacy_export"])
def test_a_privacy_request_while_the_database_is_unreachable_is_a_503_and_its_retry_does_the_job(name):
    store_events([build_event("view", visitor_id=VISITOR, product_id="p1")])
    with database_unreachable():
        response = post(name)
    assert response.status_code == 503, response.content  # was a 500
    assert int(response["Retry-After"]) > 0
    body = response.json()
    assert body["errors"][0]["field"] is None and body["detail"]
    assert Event.objects.filter(visitor_id=VISITOR).exists(), "nothing was done"

    retried = post(name)
    assert retried.status_code == 200, retried.content
    if name == "privacy_erase":
        assert retried.json()["counts"]["events"] == 1
        assert not Event.objects.filter(visitor_id=VISITOR).exists()
    else:
        assert len(retried.json()["events"]) == 1
