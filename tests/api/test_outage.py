"""An unreachable database is a 503 from the API, not an empty 200; the outage is a real connection to a closed port."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.factories import database_unreachable

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"),
]


VISITOR = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def browser(client: Client) -> Client:
    client.cookies[settings.RECOMMENDATIONS.get("VISITOR_COOKIE_NAME", "rec_vid")] = VISITOR
    return client


def post(client: Client, events: list, **kwargs):
    return client.post(
        reverse("recommendations:ingest"),
        data=json.dumps({"events": events}),
        content_type="application/json",
        **kwargs,
    )


def test_the_recommendations_api_answers_503_with_retry_after_when_the_database_is_unreachable(client):
    url = reverse("recommendations:recommendations", args=["trending"])
    assert client.get(url).status_code == 200

    with database_unreachable():
        response = client.get(url)
        assert response.status_code == 503, response.content  # was a 200 with an empty block
        with_product = client.get(url, {"product": "p1"})  # a query the view makes itself: was a 500

    assert int(response["Retry-After"]) > 0
    body = response.json()
    assert "temporarily unavailable" in body["detail"]
    assert body["errors"] == [{"field": None, "message": body["detail"]}]
    assert with_product.status_code == 503 and with_product["Retry-After"]
    assert client.get(url).status_code == 200  # and back once it is


def test_event_ingest_answers_503_when_the_database_is_unreachable(browser):
    with database_unreachable():
        response = post(browser, [{"event_type": "view", "product_id": "p1"}])
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0
    assert response.json()["errors"][0]["index"] is None
