"""A Redis cache backend for serving's hot path: Django's own, keeping its Redis client between calls.

Django's `RedisCache` builds a new `redis.Redis` for every call (~0.05 ms on this machine: redis-py sets up its
response callbacks each time), and a page that renders recommendation blocks makes one or two such calls. The client
is safe to share between threads (it takes a connection from the pool per command) and its pool resets itself in a
forked child, so one per server is enough. Everything else is Django's backend unchanged; using it is optional:

    CACHES = {"default": {"BACKEND": "recommendations.cache_backends.RedisCache", "LOCATION": "redis://..."}}
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class KeptClient(RedisCacheClient):
    """Django's client, handing out one `redis.Redis` per server instead of a new one per call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        client = self._kept.get(id(pool))  # pools live as long as this client: an id is never reused
        if client is None:
            client = self._kept[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = KeptClient
