"""Circuit breakers: a service that failed (the Redis cache, the Celery broker, the throttles' counters) is skipped
for a while instead of costing every request a connection attempt or a timeout.

A breaker is closed while calls succeed. The first failure opens it for `seconds`: callers ask `allow()` and, while it
is open, go without the service (a cache miss, a refresh left to the next precompute, an unthrottled request). Once
the time is up, one caller is let through as a probe (the others keep skipping): its success closes the breaker, its
failure opens it for another `seconds`, and a probe that never reports is followed by another one `seconds` later.
A process keeps one breaker per service, shared by its threads (`named`); `breakers()` lists them for a health check,
and the test suite resets them between tests with `reset_all()`.

The hot path is one attribute read: a closed breaker takes no lock.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)

DEFAULT_SECONDS = 5.0
"""How long a failed service is skipped before one request tries it again: long enough that a dead service costs a
process one failed attempt per interval, short enough that a service back after a restart is used again soon."""

_registry: dict[str, Breaker] = {}
_registry_lock = threading.Lock()


class Breaker:
    """Skips a failed service for `seconds`, then lets one probe through (see the module's docstring)."""

    def __init__(self, name: str, seconds: float = DEFAULT_SECONDS) -> None:
        self.name = name
        self.seconds = float(seconds)
        self.trips = 0  # how many times it opened after having been closed (a count for metrics and tests)
        self.skipped = 0  # calls that went without the service while it was open
        self._open_until = 0.0  # 0.0: closed; else the monotonic time the next probe may go
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True while the service is taken for down (open, or a probe is on its way)."""
        return self._open_until != 0.0

    def allow(self) -> bool:
        """Whether the caller may use the service now; False means: go without it."""
        if self._open_until == 0.0:
            return True
        now = time.monotonic()
        if now >= self._open_until:
            with self._lock:
                if self._open_until != 0.0 and now >= self._open_until:
                    # This caller is the probe; the next one waits another interval, even if this one never reports.
                    self._open_until = now + self.seconds
                    return True
                if self._open_until == 0.0:
                    return True
        self.skipped += 1
        return False

    def failed(self, exc: BaseException) -> None:
        """The service failed: skip it for `seconds` (logged once when it opens, quietly while it stays down)."""
        with self._lock:
            opening = self._open_until == 0.0
            self._open_until = time.monotonic() + self.seconds
            if opening:
                self.trips += 1
        if opening:
            logger.warning(
                "%s cannot be reached (%s: %s); going without it, and trying again in %g s",
                self.name,
                type(exc).__name__,
                exc,
                self.seconds,
            )
        else:
            logger.info("%s still cannot be reached (%s); trying again in %g s", self.name, exc, self.seconds)

    def succeeded(self) -> bool:
        """The service answered: close the breaker if it was open; True when this call closed it."""
        if self._open_until == 0.0:
            return False
        with self._lock:
            was_open, self._open_until = self._open_until != 0.0, 0.0
        if was_open:
            logger.warning("%s answers again", self.name)
        return was_open

    def reset(self) -> None:
        """Closed, with its counts at zero (tests)."""
        with self._lock:
            self._open_until, self.trips, self.skipped = 0.0, 0, 0


def named(name: str, seconds: float = DEFAULT_SECONDS) -> Breaker:
    """The process's breaker for `name`, made on first use; a later `seconds` for the same name wins."""
    breaker = _registry.get(name)
    if breaker is None:
        with _registry_lock:
            breaker = _registry.setdefault(name, Breaker(name, seconds))
    breaker.seconds = float(seconds)
    return breaker


def breakers() -> list[Breaker]:
    """Every breaker this process has made, e.g. for a health check that reports which services are skipped."""
    return list(_registry.values())


def reset_all() -> None:
    """Close every breaker (the test suite, between tests)."""
    for breaker in breakers():
        breaker.reset()
