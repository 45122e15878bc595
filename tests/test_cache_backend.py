"""The Redis cache backend that keeps its client behaves as Django's does, in threads and in a forked child."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest
from django.conf import settings
from django.core.cache import caches

from recommendations.cache_backends import RedisCache

REDIS_URL = os.environ.get("CACHE_URL", "")
pytestmark = pytest.mark.skipif(not REDIS_URL.startswith("redis"), reason="needs CACHE_URL pointing at Redis")


@pytest.fixture
def redis_cache():
    backend = RedisCache(REDIS_URL, {"KEY_PREFIX": "cache-backend-test"})
    backend.clear()
    yield backend
    backend.clear()


def test_the_shop_uses_it_when_the_cache_is_redis():
    assert settings.CACHES["default"]["BACKEND"] == "recommendations.cache_backends.RedisCache"
    assert isinstance(caches["default"], RedisCache)


def test_it_keeps_one_client_and_answers_as_djangos_backend(redis_cache):
    client = redis_cache._cache.get_client()
    assert redis_cache._cache.get_client(write=True) is client
    redis_cache.set("a", {"items": [1, 2]}, 30)
    redis_cache.set_many({"b": 2, "c": "three"}, 30)
    assert redis_cache.get_many(["a", "b", "c", "missing"]) == {"a": {"items": [1, 2]}, "b": 2, "c": "three"}
    assert redis_cache.incr("b") == 3
    assert redis_cache.add("b", 0) is False
    redis_cache.delete("a")
    assert redis_cache.get("a") is None
    with pytest.raises(ValueError):
        redis_cache.incr("missing")


def test_threads_share_the_client(redis_cache):
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(200):
                redis_cache.set(f"t{n}:{k}", k, 30)
                assert redis_cache.get(f"t{n}:{k}") == k
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _in_child(backend: RedisCache, queue: multiprocessing.Queue) -> None:
    backend.set("from-child", os.getpid(), 30)
    queue.put(backend.get("from-child"))


def test_a_forked_child_gets_its_own_connections(redis_cache):
    redis_cache.set("warm", 1, 30)  # the parent holds an open connection before the fork, as a web worker does
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(redis_cache, queue))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == child.pid
    assert redis_cache.get("warm") == 1  # and the parent's still work
