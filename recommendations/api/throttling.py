"""Rate limits of the API: one per shopper for browsers, one shared by servers holding the write key.

Ingest (`POST /api/events/`) and reads (`GET /api/recommendations/<placement>/`) have their own scopes, so a page
that fetches several blocks never eats into the budget of the events it sends.

Two departures from DRF's `SimpleRateThrottle`, both deliberate:

- The rate is read on every request instead of the class attribute `THROTTLE_RATES`, which DRF evaluates once at
  import: RECOMMENDATIONS["THROTTLE_RATES"] first, then REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] (`api_settings` is
  reloaded when it changes), then the app's own DEFAULT_RATES, so a host that configured nothing gets a working,
  throttled API instead of a 500 per request, and `override_settings` takes effect.
- Counting uses two fixed windows in the shared cache, weighted as a sliding window: one atomic `incr` plus one
  read per request. DRF keeps a list of every request's timestamp per client and rewrites it on each request,
  which is slow at server rates (thousands a minute) and loses counts when gunicorn workers race.

When the cache cannot count (Redis down), requests are let through, not refused or failed: ingest must need only
the database. A breaker (`COUNTERS`) then skips counting for a few seconds, logged once.
"""

from __future__ import annotations

import math
from typing import Any

from django.core.checks import Error, register
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from recommendations import breaker, keys
from recommendations.api.authentication import has_write_key
from recommendations.cache_backends import CacheUnavailable
from recommendations.conf import rec_settings
from recommendations.tracking import valid_visitor_id

# Used when neither RECOMMENDATIONS["THROTTLE_RATES"] nor REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] names the scope.
DEFAULT_RATES: dict[str, str] = {
    "recommendations_ingest": "120/min",  # a browser's own events
    "recommendations_ingest_key": "6000/min",  # servers holding the write key, together
    "recommendations_read": "300/min",  # a page may fetch several blocks
    "recommendations_read_key": "6000/min",
}
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The shared cache's counters, as the throttles see them: while they cannot be reached, requests are not throttled.
COUNTERS = breaker.named("API throttle counters (the shared cache)")


def valid_rate(rate: Any) -> bool:
    """A rate DRF can parse ("120/min", "5/s"), or None for no limit."""
    if rate is None:
        return True
    if not isinstance(rate, str) or rate.count("/") != 1:
        return False
    number, period = rate.split("/")
    return number.strip().isdigit() and period.strip()[:1] in _PERIODS


def rate_for(scope: str) -> str | None:
    """The rate of a scope: the app's setting, else DRF's DEFAULT_THROTTLE_RATES, else DEFAULT_RATES."""
    ours = rec_settings.THROTTLE_RATES or {}
    if scope in ours:
        return ours[scope]
    drf = api_settings.DEFAULT_THROTTLE_RATES or {}
    if scope in drf:
        return drf[scope]
    return DEFAULT_RATES.get(scope)


@register()
def check_throttle_rates(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A rate DRF cannot parse would answer 500 on every API call; say so at start-up, naming the setting."""
    errors: list[Error] = []
    ours = rec_settings.THROTTLE_RATES
    if not isinstance(ours, dict):
        return errors  # conf's check reports the shape
    for scope in ours:
        if scope not in DEFAULT_RATES:
            errors.append(
                Error(
                    f"RECOMMENDATIONS['THROTTLE_RATES'] names unknown scope {scope!r}.",
                    hint=f"Known: {', '.join(DEFAULT_RATES)}.",
                    id="recommendations.E007",
                )
            )
    for scope in DEFAULT_RATES:
        rate = rate_for(scope)
        if not valid_rate(rate):
            where = "RECOMMENDATIONS['THROTTLE_RATES']" if scope in ours else "REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']"
            errors.append(
                Error(
                    f"{where}[{scope!r}] is {rate!r}: a rate must be like '120/min', or None for no limit.",
                    id="recommendations.E007",
                )
            )
    return errors


class SlidingWindowThrottle(SimpleRateThrottle):
    """Allows `num_requests` per `duration`, estimated as prev_window * (1 - elapsed share) + this_window."""

    cache_format = keys.THROTTLE

    def __init__(self) -> None:
        super().__init__()
        self._wait: float | None = None

    def get_rate(self) -> str | None:
        return rate_for(self.scope)

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
        if not COUNTERS.allow():
            return True
        try:
            current = self._increment(key)
            previous = self.cache.get(previous_key) or 0
            allowed = previous * (1 - elapsed) + current <= self.num_requests
            if not allowed:
                # A refused request does not count against the client, so it may retry after the advertised wait.
                self.cache.decr(key)
        except CacheUnavailable:
            return True  # the app's Redis backend: its own breaker already skips Redis and logged it
        except Exception as exc:  # whatever another cache backend raises when it cannot count
            # Fail open: a throttle that cannot count must not refuse (or fail) the request, least of all an event
            # batch; the breaker skips counting for a while instead of trying a dead cache on every request.
            COUNTERS.failed(exc)
            return True
        COUNTERS.succeeded()
        if allowed:
            return True
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
