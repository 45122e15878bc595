"""A Redis cache backend for serving's hot path: Django's own, keeping its Redis client between calls, and going on
without Redis when it cannot be reached.

Django's `RedisCache` builds a new `redis.Redis` for every call (~0.05 ms on this machine: redis-py sets up its
response callbacks each time), and a page that renders recommendation blocks makes one or two such calls. The client
is safe to share between threads (it takes a connection from the pool per command) and its pool resets itself in a
forked child, so one per server is enough.

A cache is an optimisation, so a Redis that is down or hangs must not take pages, the API or ingest with it. When a
call cannot reach Redis (refused, reset, timed out), the backend answers as an empty cache would: a read misses, a
write is dropped, `add` and `delete` say False; `incr`/`decr` raise `CacheUnavailable`, since no number would be
true. Then a circuit breaker (`recommendations.breaker`) skips Redis for BREAKER_SECONDS, so a dead Redis costs a
process one failed attempt per interval instead of one per call; after it, one call tries Redis again. Errors Redis
itself answers (a wrong type, out of memory) still raise. Socket timeouts are redis-py's OPTIONS; without them a hung
Redis holds the calling request as long as the operating system waits (see docs/operations.md, "When parts fail").

    CACHES = {"default": {
        "BACKEND": "recommendations.cache_backends.RedisCache",
        "LOCATION": "redis://...",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "BREAKER_SECONDS": 5},
    }}

Using it is optional; the app's own callers (throttles, refresh scheduling, block caching) fail open with any backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

from recommendations import breaker, holds


class CacheUnavailable(Exception):
    """Redis cannot be reached, and the operation (a counter) has no answer that would not be a lie."""


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


def _where(servers: Iterable[str]) -> str:
    """The servers as host:port/db for a log line: never the password a URL may carry."""
    shown = []
    for server in servers:
        parts = urlsplit(server)
        shown.append(f"{parts.hostname or parts.path}{f':{parts.port}' if parts.port else ''}{parts.path or ''}")
    return ", ".join(shown)


_MISSING = object()


class RedisCache(DjangoRedisCache):
    """Django's Redis backend with a kept client and a circuit breaker (see the module's docstring)."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS") or {})
        seconds = float(options.pop("BREAKER_SECONDS", breaker.DEFAULT_SECONDS))
        super().__init__(server, {**params, "OPTIONS": options})
        self._class = KeptClient
        import redis

        self._unreachable = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        # One per server list and process, shared by the backend objects Django makes per thread.
        self.breaker = breaker.named(f"Redis cache at {_where(self._servers)}", seconds)

    def _call(self, operation: Callable[..., Any], degraded: Any, *args: Any, **kwargs: Any) -> Any:
        """`operation(*args)`, or `degraded` when Redis cannot be reached (now, or lately: the breaker is open)."""
        if not self.breaker.allow():
            return degraded
        try:
            result = operation(*args, **kwargs)
        except self._unreachable as exc:
            self.breaker.failed(exc)
            return degraded
        except Exception:
            self._answered()  # Redis answered, with an error of the call's own (`incr` of a missing key)
            raise
        self._answered()
        return result

    def _answered(self) -> None:
        if self.breaker.succeeded():
            # What this process holds (lists, profiles, the rules' bundle) is kept current by version stamps in this
            # cache, which it could not read meanwhile (a rule saved, a set switched): it starts over from them now.
            holds.clear_all()

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return self._call(super().add, False, key, value, timeout, version)

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._call(super().get, default, key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> None:
        self._call(super().set, None, key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return self._call(super().touch, False, key, timeout, version)

    def delete(self, key: Any, version: Any = None) -> bool:
        return self._call(super().delete, False, key, version)

    def get_many(self, keys: Any, version: Any = None) -> dict[Any, Any]:
        return self._call(super().get_many, {}, keys, version)

    def has_key(self, key: Any, version: Any = None) -> bool:
        return self._call(super().has_key, False, key, version)

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        result = self._call(super().incr, _MISSING, key, delta, version)
        if result is _MISSING:
            raise CacheUnavailable(f"{self.breaker.name} cannot be reached")
        return result

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> list[Any]:
        result = self._call(super().set_many, _MISSING, data, timeout, version)
        return list(data) if result is _MISSING else result  # Django's contract: the keys that were not stored

    def delete_many(self, keys: Any, version: Any = None) -> None:
        self._call(super().delete_many, None, keys, version)

    def clear(self) -> bool:
        return self._call(super().clear, False)
