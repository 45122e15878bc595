"""Rate limits of the API: one per shopper for browsers, one shared by servers holding the write key.

Ingest (`POST /api/events/`) and reads (`GET /api/recommendations/<placement>/`) have their own scopes, so a page
that fetches several blocks never eats into the budget of the events it sends.

Two departures from DRF's `SimpleRateThrottle`, both deliberate:

- The rate is read from `api_settings` on every request instead of the class attribute `THROTTLE_RATES`, which
  DRF evaluates once at import. `api_settings` is reloaded when REST_FRAMEWORK changes, so `override_settings`
  and deploy-time environment changes both take effect.
- Counting uses two fixed windows in the shared cache, weighted as a sliding window: one atomic `incr` plus one
  read per request. DRF keeps a list of every request's timestamp per client and rewrites it on each request,
  which is slow at server rates (thousands a minute) and loses counts when gunicorn workers race.
"""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from recommendations.api.authentication import has_write_key
from recommendations.conf import rec_settings
from recommendations.tracking import valid_visitor_id


class SlidingWindowThrottle(SimpleRateThrottle):
    """Allows `num_requests` per `duration`, estimated as prev_window * (1 - elapsed share) + this_window."""

    cache_format = "throttle:%(scope)s:%(ident)s"

    def __init__(self) -> None:
        super().__init__()
        self._wait: float | None = None

    def get_rate(self) -> str | None:
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"No throttle rate set for scope {self.scope!r}") from None

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        base = self.get_cache_key(request, view)
        if base is None:
            return True
        now = self.timer()
        window, offset = divmod(now, self.duration)
        window = int(window)
        elapsed = offset / self.duration
        key, previous_key = f"{base}:{window}", f"{base}:{window - 1}"
        current = self._increment(key)
        previous = self.cache.get(previous_key) or 0
        if previous * (1 - elapsed) + current <= self.num_requests:
            return True
        # A refused request does not count against the client, so it may retry after the advertised wait.
        self.cache.decr(key)
        self._wait = self._seconds_until_allowed(previous, current - 1, elapsed)
        return False

    def _increment(self, key: str) -> int:
        """Count this request; a window's key lives two windows, so it never expires while it is counted into."""
        try:
            return self.cache.incr(key)
        except ValueError:  # the window's first request (or a race to be it)
            if self.cache.add(key, 1, self.duration * 2):
                return 1
            return self.cache.incr(key)

    def _seconds_until_allowed(self, previous: int, current: int, elapsed: float) -> float:
        limit, duration = self.num_requests, self.duration
        if current + 1 <= limit:
            # Wait for the previous window's share to fade enough.
            needed = 1 - (limit - current - 1) / previous if previous else 0.0
            return max(needed - elapsed, 0.0) * duration
        # This window is full: wait for the next one, then for this window's count to fade enough.
        needed = 1 - (limit - 1) / current if current else 0.0
        return (1 - elapsed + max(needed, 0.0)) * duration

    def wait(self) -> float | None:
        return None if self._wait is None else max(1.0, math.ceil(self._wait))


class PerShopperThrottle(SlidingWindowThrottle):
    """Browsers: per logged-in user, else per visitor cookie, else per client IP.

    A client can mint visitor cookies to get fresh buckets; what that buys is the right to add tracking noise (or
    read trending lists), the same as any anonymous shopper has. Abuse by volume belongs to the reverse proxy's
    per-IP limits. Keying anonymous shoppers on IP instead would throttle whole mobile carriers behind shared
    addresses.
    """

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if has_write_key(request):
            return None
        if request.user is not None and request.user.is_authenticated:
            ident = f"u:{request.user.pk}"
        else:
            cookie = request.COOKIES.get(rec_settings.VISITOR_COOKIE_NAME)
            ident = f"v:{cookie}" if valid_visitor_id(cookie) else f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class WriteKeyThrottle(SlidingWindowThrottle):
    """Servers holding the write key share one bucket: there is one key, so one integration."""

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not has_write_key(request):
            return None
        return self.cache_format % {"scope": self.scope, "ident": "write-key"}


class IngestThrottle(PerShopperThrottle):
    scope = "recommendations_ingest"


class IngestKeyThrottle(WriteKeyThrottle):
    scope = "recommendations_ingest_key"


class ReadThrottle(PerShopperThrottle):
    scope = "recommendations_read"


class ReadKeyThrottle(WriteKeyThrottle):
    scope = "recommendations_read_key"
