"""Is the system healthy: the checks behind the `health/` view, the scrape-time gauges of `metrics/` and the admin's
"System status" page, so the three always say the same.

Each check answers ok or failing with a short message an operator can act on, and never raises. The ones here need
only the database and the cache: the database answering, the cache storing and reading back, the serving model's
age and the active list set's age against HEALTH_MAX_MODEL_AGE_HOURS and HEALTH_MAX_LIST_AGE_HOURS. The broker and
a worker answering are asked from a higher layer (`recommendations.task_health`, which knows whether tasks go to a
broker at all) through the `signals.health_checks` signal; a host may connect its own checks there too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext as _
from prometheus_client.core import GaugeMetricFamily

from recommendations import keys, signals
from recommendations.conf import rec_settings
from recommendations.models import RecommendationSet, TrainingRun

logger = logging.getLogger(__name__)

MAX_MESSAGE = 200  # an exception's text can be long (a whole SQL statement); the start says what failed


@dataclass
class Check:
    """One check's answer: `value` is the figure it judged (an age in seconds, a queue length), `data` the rest."""

    name: str
    ok: bool
    message: str
    seconds: float = 0.0
    value: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "status": "ok" if self.ok else "failing",
            "message": self.message,
            "ms": round(self.seconds * 1000, 1),
        }
        if self.value is not None:
            answer["value"] = round(self.value, 3)
        return {**answer, **self.data}


@dataclass
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failing(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "failing",
            "failing": self.failing,
            "checks": {c.name: c.as_json() for c in self.checks},
        }


def failure_message(exc: BaseException) -> str:
    """An exception as a check's message: its type and the start of its text."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:MAX_MESSAGE] if text else type(exc).__name__


def timed(name: str, probe: Callable[[], Check]) -> Check:
    """Run `probe`, timing it; an exception is a failing check that names it, never an error of the caller."""
    started = time.perf_counter()
    try:
        check = probe()
    except Exception as exc:
        logger.warning("health check %s failed: %s", name, exc)
        check = Check(name, False, failure_message(exc))
    check.seconds = time.perf_counter() - started
    return check


def check_database() -> Check:
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return Check("database", True, _("answers (%(vendor)s)") % {"vendor": connection.vendor})


def check_cache() -> Check:
    token = uuid.uuid4().hex
    key = keys.HEALTH_PROBE + token
    cache.set(key, token, timeout=10)
    if cache.get(key) != token:
        # The app's Redis backend goes without a Redis it cannot reach (recommendations.breaker) instead of raising.
        return Check("cache", False, _("a value written was not read back: the cache is unreachable or full"))
    return Check("cache", True, _("stores and reads back"))


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}"


def _age_check(name: str, since: datetime | None, limit_hours: float | None, what: str, now: datetime) -> Check:
    age = max(0.0, (now - since).total_seconds()) if since is not None else None
    if age is None:  # failing only when an age is asked for
        return Check(name, limit_hours is None, what)
    words = {"age": _hours(age), "limit": limit_hours}
    if limit_hours is None:
        return Check(name, True, _("%(age)s h old (no limit set)") % words, value=age)
    if age > float(limit_hours) * 3600:
        return Check(name, False, _("%(age)s h old: older than the limit of %(limit)s h") % words, value=age)
    return Check(name, True, _("%(age)s h old (limit %(limit)s h)") % words, value=age)


def check_serving_model(now: datetime | None = None) -> Check:
    """The serving model's age: since its run finished training (or since it was activated, when that is unknown)."""
    run = TrainingRun.objects.filter(is_serving=True).only("finished_at", "activated_at", "created_at").first()
    since = (run.finished_at or run.activated_at or run.created_at) if run is not None else None
    check = _age_check(
        "serving_model",
        since,
        rec_settings.HEALTH_MAX_MODEL_AGE_HOURS,
        _("no trained model serves: blocks come from trending and best sellers; run a retrain"),
        now or timezone.now(),
    )
    if run is not None:
        check.data["run"] = run.pk
    return check


def check_list_set(now: datetime | None = None) -> Check:
    """The active list set's age: since precompute switched it on."""
    active = (
        RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE)
        .only("activated_at", "created_at")
        .order_by("-activated_at", "-pk")
        .first()
    )
    since = (active.activated_at or active.created_at) if active is not None else None
    check = _age_check(
        "list_set",
        since,
        rec_settings.HEALTH_MAX_LIST_AGE_HOURS,
        _("no recommendation set is active: run a precompute"),
        now or timezone.now(),
    )
    if active is not None:
        check.data["set"] = active.pk
    return check


def run_checks() -> Report:
    """Every check, in a fixed order: this module's, then those the `health_checks` signal's receivers give."""
    checks = [
        timed("database", check_database),
        timed("cache", check_cache),
        timed("serving_model", check_serving_model),
        timed("list_set", check_list_set),
    ]
    for receiver, answer in signals.health_checks.send_robust(sender=Report):
        if isinstance(answer, BaseException):
            name = getattr(receiver, "__name__", "check")
            logger.warning("health check %s raised: %s", name, answer)
            checks.append(Check(name, False, failure_message(answer)))
        else:
            checks.extend(answer or [])
    return Report(checks)


class ReportCollector:
    """The report as Prometheus gauges at scrape time: each check's state, the model's and the set's age, the
    queue lengths. Handed to `metrics.exposition`, never registered: nothing is measured unless scraped."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "recommendations_health_ok", "1 when the health check passes, 0 when it fails.", labels=["check"]
        )
        for check in self.report.checks:
            state.add_metric([check.name], 1.0 if check.ok else 0.0)
        yield state
        ages = (
            ("serving_model", "recommendations_serving_model_age_seconds", "Seconds since the serving model trained."),
            ("list_set", "recommendations_list_set_age_seconds", "Seconds since the active list set was switched on."),
        )
        for name, metric, documentation in ages:
            check = self.report.get(name)
            if check is not None and check.value is not None:
                yield GaugeMetricFamily(metric, documentation, value=check.value)
        broker = self.report.get("broker")
        queues = broker.data.get("queues") if broker is not None else None
        if queues:
            lengths = GaugeMetricFamily(
                "recommendations_queue_length", "Messages waiting on the broker, by queue.", labels=["queue"]
            )
            for queue, length in sorted(queues.items()):
                lengths.add_metric([queue], float(length))
            yield lengths
