"""The Redis cache backend's circuit breaker, against a real redis-server that is stopped (refuses) or frozen (hangs):
the cache answers as an empty cache would, a dead Redis is tried once per interval rather than on every call, a hung
one costs one socket timeout rather than one per call, and it is used again once it answers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.core.cache import caches
from django.test import Client
from django.urls import reverse

from recommendations import tasks
from recommendations.api import throttling
from recommendations.cache_backends import CacheUnavailable, KeptClient, RedisCache
from recommendations.holds import Hold
from recommendations.models import Event, ProductProfile
from tests.faults.conftest import BREAKER_SECONDS, RedisServer

SOCKET_TIMEOUT = 0.5  # the demo's (shop/settings.py)


@pytest.fixture
def backend(own_redis: RedisServer) -> RedisCache:
    return RedisCache(
        own_redis.url(2),
        {
            "OPTIONS": {
                "socket_connect_timeout": SOCKET_TIMEOUT,
                "socket_timeout": SOCKET_TIMEOUT,
                "BREAKER_SECONDS": BREAKER_SECONDS,
            }
        },
    )


@pytest.fixture
def redis_calls(monkeypatch: Any) -> list[int]:
    """One entry per operation that reached for a Redis connection (every cache call takes a client first)."""
    calls: list[int] = []
    get_client = KeptClient.get_client

    def counted(self: KeptClient, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return get_client(self, *args, **kwargs)

    monkeypatch.setattr(KeptClient, "get_client", counted)
    return calls


def test_a_stopped_redis_is_an_empty_cache_and_is_tried_once_per_interval(backend, own_redis, redis_calls):
    backend.set("kept", {"items": [1]}, 60)
    assert backend.get("kept") == {"items": [1]}
    own_redis.stop()
    redis_calls.clear()

    assert backend.get("kept", "default") == "default"  # tried: refused, the breaker opens
    assert backend.breaker.is_open and backend.breaker.trips == 1
    assert backend.get_many(["kept", "other"]) == {}
    assert backend.has_key("kept") is False
    assert backend.add("new", 1) is False
    assert backend.set("new", 1) is None
    assert backend.set_many({"a": 1, "b": 2}) == ["a", "b"]  # Django's contract: the keys not stored
    assert backend.touch("kept") is False
    assert backend.delete("kept") is False
    backend.delete_many(["a", "b"])
    assert backend.clear() is False
    with pytest.raises(CacheUnavailable):
        backend.incr("counter")  # no number would be true
    with pytest.raises(CacheUnavailable):
        backend.decr("counter")
    assert redis_calls == [1], "only the first call reached for Redis"
    assert backend.breaker.skipped == 11

    time.sleep(BREAKER_SECONDS + 0.05)
    assert backend.get("kept") is None  # the probe: still refused, open for another interval
    assert len(redis_calls) == 2 and backend.breaker.is_open and backend.breaker.trips == 1

    own_redis.start()
    time.sleep(BREAKER_SECONDS + 0.05)
    assert backend.get("kept") is None  # the probe succeeds (an empty Redis, as after a restart)
    assert not backend.breaker.is_open
    backend.set("back", 2, 60)
    assert backend.get("back") == 2
    assert backend.incr("back") == 3


def test_a_hung_redis_costs_one_socket_timeout_per_interval_not_one_per_call(backend, own_redis, redis_calls):
    backend.set("kept", 1, 60)  # a pooled connection, open when Redis hangs
    own_redis.freeze()
    redis_calls.clear()

    started = time.monotonic()
    assert backend.get("kept") is None
    assert time.monotonic() - started >= SOCKET_TIMEOUT * 0.9, "the first call waits for the socket timeout"
    assert backend.breaker.is_open

    started = time.monotonic()
    for n in range(50):
        assert backend.get(f"k{n}", n) == n
        backend.set(f"k{n}", n)
    skipping = time.monotonic() - started
    assert redis_calls == [1], "none of the 100 calls after the first waited on Redis"
    assert skipping < SOCKET_TIMEOUT, f"100 skipped calls took {skipping:.3f} s, as long as a socket timeout"

    own_redis.thaw()
    time.sleep(BREAKER_SECONDS + 0.05)
    assert backend.get("kept") == 1
    assert not backend.breaker.is_open and len(redis_calls) == 2


def test_what_the_process_holds_starts_over_when_redis_answers_again(backend, own_redis):
    """Holds learn of changes (a rule saved, a set switched) through version stamps in the cache; a process that could
    not read them for a while must not keep what it held before."""
    held = Hold("fault test hold", 10, owner=__name__)
    held.put("rules", "as before the outage")
    own_redis.stop()
    assert backend.get("version") is None
    held.put("rules", "read during the outage")
    assert held.get("rules") == "read during the outage", "an outage alone empties nothing"
    own_redis.start()
    time.sleep(BREAKER_SECONDS + 0.05)
    assert backend.get("version") is None and not backend.breaker.is_open
    assert held.get("rules") is None


def test_errors_redis_answers_still_raise_and_leave_the_breaker_closed(backend):
    backend.set("word", "not a number", 60)
    with pytest.raises(Exception, match="not an integer"):
        backend.incr("word")
    with pytest.raises(ValueError):
        backend.incr("missing")  # Django's contract for a key that is not there
    assert not backend.breaker.is_open and backend.breaker.trips == 0


@pytest.mark.django_db
def test_ingest_with_a_hung_cache_stores_every_batch_and_waits_on_redis_once(cache_on_own_redis, settings, redis_calls):
    """The write path needs PostgreSQL only: throttle, debounce and block-cache stamps go without a hung Redis."""
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "WRITE_KEY": "k", "TASKS": "inline"}
    ProductProfile.objects.create(product_id="p1", name="p1")
    client = Client()

    def ingest(n: int) -> Any:
        event = {"event_type": "view", "product_id": "p1", "user_id": "7", "event_id": f"e{n}"}
        body = json.dumps({"events": [event]})
        return client.post(
            reverse("recommendations:ingest"),
            data=body,
            content_type="application/json",
            headers={"X-Recommendations-Key": "k"},
        )

    assert ingest(0).status_code == 200
    # Long enough that no probe falls inside the loop below however slow the machine: one wait is what is counted.
    caches["default"].breaker.seconds = 60
    cache_on_own_redis.freeze()
    redis_calls.clear()
    for n in range(1, 11):
        response = ingest(n)
        assert response.status_code == 200 and response.json()["accepted"] == 1, response.content
    assert Event.objects.count() == 11
    assert redis_calls == [1], "Redis was waited on by the first batch only"
    assert caches["default"].breaker.trips == 1


@pytest.mark.django_db
def test_with_djangos_own_redis_backend_the_write_path_fails_open_too(own_redis, settings):
    """A host on another cache backend: the throttles and refresh scheduling have breakers of their own."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": own_redis.url(1)}
    }
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "WRITE_KEY": "k", "TASKS": "celery"}
    ProductProfile.objects.create(product_id="p1", name="p1")
    own_redis.stop()
    for n in range(3):
        event = {"event_type": "view", "product_id": "p1", "user_id": "7", "event_id": f"e{n}"}
        response = Client().post(
            reverse("recommendations:ingest"),
            data=json.dumps({"events": [event]}),
            content_type="application/json",
            headers={"X-Recommendations-Key": "k"},
        )
        assert response.status_code == 200 and response.json()["accepted"] == 1, response.content
    assert Event.objects.count() == 3
    assert throttling.COUNTERS.trips == 1 and throttling.COUNTERS.skipped >= 2
    assert tasks.DEBOUNCE.trips == 1 and tasks.DEBOUNCE.skipped >= 2
