"""Redis (cache and broker) stopped mid-test, then started again: ingest with the write key still stores every event
and answers 200, the recommendations API still answers 200 with the same items, the home page still renders its
blocks, and once Redis is back, caching, throttling and refresh scheduling work again.

Before: ingest answered 500 and lost the event, the API answered 500, the home page had no block at all.
Real PostgreSQL, a real redis-server of the test's own (tests/faults/conftest.py), the demo's cache settings.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import Client
from django.urls import reverse

from recommendations import tasks
from recommendations.cache_backends import RedisCache
from recommendations.conf import rec_settings
from recommendations.models import Event
from tests.factories import block_html, make_co_viewed_toys, rendered_ids
from tests.faults.conftest import BREAKER_SECONDS

# Committed for real: the refresh is sent when the ingest's transaction commits, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

WRITE_KEY = "s3cret-write-key-for-fault-tests"
SHOPPER_VISITOR = f"{0:032x}"  # one of the toy shop's five visitors: they have a for_you list


@pytest.fixture
def shop(cache_on_own_redis, broker_on_own_redis, settings) -> dict[str, Any]:
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "WRITE_KEY": WRITE_KEY}
    # Low enough that the test sees the write key's throttle refuse once Redis is back.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "recommendations_ingest_key": "3/min",
        },
    }
    return make_co_viewed_toys()


def ingest(shop: dict[str, Any], n: int = 1) -> tuple[Any, list[str]]:
    ids = [uuid.uuid4().hex for _ in range(n)]
    events = [
        {"event_type": "view", "product_id": str(shop["Drum"].pk), "visitor_id": f"{7:032x}", "event_id": event_id}
        for event_id in ids
    ]
    response = Client().post(
        reverse("recommendations:ingest"),
        data=json.dumps({"events": events}),
        content_type="application/json",
        headers={"X-Recommendations-Key": WRITE_KEY},
    )
    return response, ids


def trending_api() -> Any:
    return Client().get(reverse("recommendations:recommendations", args=["trending"]))


def home_blocks() -> dict[str, list[str]]:
    client = Client()
    client.cookies[rec_settings.VISITOR_COOKIE_NAME] = SHOPPER_VISITOR
    response = client.get(reverse("home"))
    assert response.status_code == 200
    html = response.content.decode()
    return {p: rendered_ids(block_html(html, p)) for p in ("for_you", "recently_viewed", "trending")}


def queued_messages(redis: Any) -> int:
    return redis.client(0).llen("celery")


def cache_breaker() -> Any:
    default = caches["default"]
    assert isinstance(default, RedisCache)
    return default.breaker


def test_ingest_api_and_pages_go_on_without_redis_and_recover_when_it_returns(shop, own_redis):
    # Redis up: the baseline, and a refresh task is queued for the shopper whose event came in.
    response, _ = ingest(shop)
    assert response.status_code == 200 and response.json()["accepted"] == 1, response.content
    assert queued_messages(own_redis) == 1
    api_before = trending_api()
    assert api_before.status_code == 200
    trending_items = [item["product_id"] for item in api_before.json()["items"]]
    assert trending_items
    blocks_before = home_blocks()
    # The page shows each product once: this shopper's for_you takes the toy shop's four, so trending has none left.
    assert len(blocks_before["for_you"]) == 4, blocks_before

    own_redis.stop()

    # Ingest: every valid event stored, the normal answer, and the throttle lets the batches through (fail open):
    # five batches although the key's rate is 3 a minute and one was counted before.
    stored: list[str] = []
    for _ in range(5):
        response, ids = ingest(shop, n=2)
        assert response.status_code == 200, response.content  # was a 500, with the event lost
        assert response.json() == {**response.json(), "accepted": 2, "duplicates": 0, "errors": []}
        stored += ids
    assert set(Event.objects.filter(event_id__in=stored).values_list("event_id", flat=True)) == set(stored)
    # Redis was tried once, then skipped: the breaker opened once and every later call went without it.
    breaker = cache_breaker()
    assert breaker.is_open and breaker.trips == 1 and breaker.skipped > 0
    assert tasks.BROKER.is_open and tasks.BROKER.trips == 1

    # Serving answers from the database: the same items as from the cache.
    api_down = trending_api()
    assert api_down.status_code == 200, api_down.content  # was a 500
    assert [item["product_id"] for item in api_down.json()["items"]] == trending_items
    assert home_blocks() == blocks_before  # was a page without any block

    # Redis returns (empty, as after a restart without persistence): after the breaker's interval, all recovers.
    own_redis.start()
    time.sleep(BREAKER_SECONDS + 0.1)
    response, _ = ingest(shop)
    assert response.status_code == 200, response.content
    assert not breaker.is_open and not tasks.BROKER.is_open
    assert queued_messages(own_redis) == 1, "the refresh of the new event is queued again"
    for _ in range(2):
        assert ingest(shop)[0].status_code == 200
    refused, _ = ingest(shop)
    assert refused.status_code == 429, "the throttle counts again: a 4th batch within the minute is refused"
    assert int(refused["Retry-After"]) > 0
    assert home_blocks() == blocks_before
    assert own_redis.client(1).keys("*recommendations:block:*"), "blocks are cached again"
    assert trending_api().status_code == 200


def test_a_refresh_that_could_not_be_queued_does_not_hold_back_the_shoppers_next_events(shop, own_redis):
    """The debounce keys of a refresh the broker did not take are dropped, so the next event schedules one."""
    cache = own_redis.client(1)

    def broker_refuses(*args: Any, **kwargs: Any) -> None:
        raise OSError("broker refused")  # what kombu raises is an OSError too (ConnectionRefusedError)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks, "_send", broker_refuses)
        response, _ = ingest(shop)
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert tasks.BROKER.is_open
    assert not cache.keys("*refresh*"), "no debounce key left behind for a refresh never sent"
    time.sleep(BREAKER_SECONDS + 0.1)
    assert ingest(shop)[0].status_code == 200
    assert queued_messages(own_redis) == 1
    assert not tasks.BROKER.is_open


def test_the_demo_settings_bound_every_wait_on_redis():
    """Without socket timeouts a hung Redis (or broker) would hold requests as long as the operating system waits."""
    options = settings.CACHES["default"].get("OPTIONS", {})
    if settings.CACHES["default"]["BACKEND"] == "recommendations.cache_backends.RedisCache":
        assert 0 < options["socket_connect_timeout"] <= 1 and 0 < options["socket_timeout"] <= 1
    transport = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    assert transport["socket_connect_timeout"] > 0
    assert 1 < transport["socket_timeout"] <= 10  # above the 1 s an idle worker's BRPOP waits
