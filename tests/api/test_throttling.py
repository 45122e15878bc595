"""The API's throttles in a host that configured none: the app's own rates, overridable, and a bad rate is a check
error naming it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse

from recommendations import catalog
from recommendations.api import throttling
from recommendations.conf import rec_settings
from tests.factories import make_product, recommendations_with

pytestmark = pytest.mark.django_db


def rest_framework_without_rates() -> dict[str, Any]:
    """The demo's REST_FRAMEWORK minus DEFAULT_THROTTLE_RATES: what a host that followed the README has."""
    return {k: v for k, v in settings.REST_FRAMEWORK.items() if k != "DEFAULT_THROTTLE_RATES"}


def visitor_client() -> Client:
    """A browser with its own visitor cookie, so it has a throttle bucket of its own from the first request."""
    client = Client()
    client.cookies[rec_settings.VISITOR_COOKIE_NAME] = uuid.uuid4().hex
    return client


def test_the_api_answers_with_no_throttle_rates_configured():
    product = make_product("Teapot")
    catalog.sync_products()
    client = visitor_client()
    with override_settings(REST_FRAMEWORK=rest_framework_without_rates()):
        read = client.get(reverse("recommendations:recommendations", args=["trending"]))
        ingest = client.post(
            reverse("recommendations:ingest"),
            {"events": [{"event_type": "view", "product_id": str(product.pk)}]},
            content_type="application/json",
        )
    assert read.status_code == 200, read.content
    assert ingest.status_code == 200, ingest.content
    assert ingest.json()["accepted"] == 1
    assert throttling.check_throttle_rates() == []


def test_the_shipped_rates_still_throttle():
    client = visitor_client()
    url = reverse("recommendations:recommendations", args=["trending"])
    limit = int(throttling.DEFAULT_RATES["recommendations_read"].split("/")[0])
    with override_settings(REST_FRAMEWORK=rest_framework_without_rates()):
        codes = [client.get(url).status_code for _ in range(limit + 1)]
    assert codes[:limit] == [200] * limit and codes[limit] == 429


def test_the_app_setting_and_drf_setting_override_the_shipped_rates():
    url = reverse("recommendations:recommendations", args=["trending"])
    with override_settings(
        REST_FRAMEWORK={**rest_framework_without_rates(), "DEFAULT_THROTTLE_RATES": {"recommendations_read": "3/min"}}
    ):
        client = visitor_client()
        assert [client.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
        # The app's own setting wins over DRF's.
        with override_settings(RECOMMENDATIONS=recommendations_with(THROTTLE_RATES={"recommendations_read": "1/min"})):
            fresh = visitor_client()
            assert [fresh.get(url).status_code for _ in range(2)] == [200, 429]


def test_a_bad_rate_or_scope_is_a_check_error_naming_it():
    with override_settings(
        RECOMMENDATIONS=recommendations_with(THROTTLE_RATES={"recommendations_read": "lots", "recommendations_x": None})
    ):
        messages = [e.msg for e in throttling.check_throttle_rates()]
    assert any("'recommendations_read'" in m and "'lots'" in m for m in messages), messages
    assert any("unknown scope 'recommendations_x'" in m for m in messages), messages
