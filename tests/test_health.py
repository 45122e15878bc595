"""`health/`: every check passes on the suite's services, a check that fails makes it a 503 naming that check, and only
staff or the metrics token see the details (anyone else gets liveness, without a check run or a database read).

The failing cache is a real Redis the test starts on a port of its own and stops; an old model is a serving run that
finished longer ago than the limit. The broker and worker checks are in tests/test_health_worker.py (a real worker).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.core.checks import Error
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recommendations import health
from recommendations.conf import check_settings
from recommendations.models import RecommendationSet, TrainingRun
from tests.factories import active_lists, closed_port, database_unreachable, make_user, recommendations_with

pytestmark = pytest.mark.django_db

TOKEN = "a-monitoring-token-0123456789"
HEALTH = "recommendations:health"


@pytest.fixture
def inline_tasks(settings: Any) -> None:
    """Tasks in-process: no broker or worker check here (tests/test_health_worker.py has them)."""
    settings.RECOMMENDATIONS = recommendations_with(TASKS="inline", METRICS_TOKEN=TOKEN)


@pytest.fixture
def fresh_model_and_lists() -> tuple[TrainingRun, RecommendationSet]:
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED,
        is_serving=True,
        chosen="popularity",
        finished_at=timezone.now() - timedelta(hours=2),
        activated_at=timezone.now() - timedelta(hours=2),
    )
    return run, active_lists()


def monitor() -> Client:
    """A monitoring system: no session, the bearer token."""
    return Client(headers={"Authorization": f"Bearer {TOKEN}"})


def test_every_check_passes_on_the_suite_services(inline_tasks, fresh_model_and_lists, staff_client):
    response = staff_client.get(reverse(HEALTH))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["failing"] == []
    assert list(body["checks"]) == ["database", "cache", "serving_model", "list_set", "tasks"]
    assert all(check["status"] == "ok" for check in body["checks"].values()), body
    run, lists = fresh_model_and_lists
    assert body["checks"]["serving_model"]["run"] == run.pk
    assert 1.9 * 3600 < body["checks"]["serving_model"]["value"] < 2.1 * 3600
    assert body["checks"]["list_set"]["set"] == lists.pk
    assert response["Cache-Control"].startswith("max-age=0")
    assert monitor().get(reverse(HEALTH)).json()["status"] == "ok"  # the token sees what staff see


def test_a_model_older_than_the_limit_is_a_503_naming_it(inline_tasks, fresh_model_and_lists, settings):
    run, _lists = fresh_model_and_lists
    TrainingRun.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(hours=30))
    settings.RECOMMENDATIONS = recommendations_with(TASKS="inline", METRICS_TOKEN=TOKEN, HEALTH_MAX_MODEL_AGE_HOURS=24)

    response = monitor().get(reverse(HEALTH))

    assert response.status_code == 503, response.content
    body = response.json()
    assert body["status"] == "failing" and body["failing"] == ["serving_model"]
    assert "30.0 h old" in body["checks"]["serving_model"]["message"]
    assert "24 h" in body["checks"]["serving_model"]["message"]
    assert body["checks"]["list_set"]["status"] == "ok"

    settings.RECOMMENDATIONS = recommendations_with(TASKS="inline", METRICS_TOKEN=TOKEN, HEALTH_MAX_MODEL_AGE_HOURS=48)
    assert monitor().get(reverse(HEALTH)).status_code == 200


def test_no_model_and_no_lists_fail_until_a_retrain_and_a_precompute(inline_tasks):
    body = monitor().get(reverse(HEALTH)).json()
    assert body["failing"] == ["serving_model", "list_set"]
    assert "retrain" in body["checks"]["serving_model"]["message"]
    assert "precompute" in body["checks"]["list_set"]["message"]


def test_an_old_list_set_is_a_503_naming_it(inline_tasks, fresh_model_and_lists):
    _run, lists = fresh_model_and_lists
    RecommendationSet.objects.filter(pk=lists.pk).update(activated_at=timezone.now() - timedelta(hours=7))

    response = monitor().get(reverse(HEALTH))

    assert response.status_code == 503
    assert response.json()["failing"] == ["list_set"]


class PrivateRedis:
    """A redis-server of this test's own on a free port, stopped by the test (never the suite's)."""

    def __init__(self) -> None:
        self.port = closed_port()
        self.directory = tempfile.mkdtemp(prefix="health-redis-")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def private_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    server = PrivateRedis()
    yield server
    server.stop()


def test_a_stopped_cache_is_a_503_naming_the_cache(inline_tasks, fresh_model_and_lists, settings, private_redis):
    settings.CACHES = {
        "default": {"BACKEND": "recommendations.cache_backends.RedisCache", "LOCATION": private_redis.url}
    }
    assert monitor().get(reverse(HEALTH)).status_code == 200
    assert redis.Redis(port=private_redis.port).keys("*health*"), "the check writes to the cache it checks"

    private_redis.stop()
    started = time.monotonic()
    response = monitor().get(reverse(HEALTH))

    assert response.status_code == 503, response.content
    body = response.json()
    assert body["failing"] == ["cache"]
    assert "not read back" in body["checks"]["cache"]["message"]  # the cache backend itself goes without Redis
    assert body["checks"]["database"]["status"] == "ok"
    assert time.monotonic() - started < 5


def test_anyone_else_gets_liveness_only_without_a_check_or_the_database(inline_tasks, client):
    user = make_user()  # signed in but not staff
    shopper = Client()
    shopper.force_login(user)
    wrong = Client(headers={"Authorization": "Bearer not-the-token-at-all-00000"})

    for who in (client, shopper, wrong):
        response = who.get(reverse(HEALTH))
        # Nothing serves and nothing was precomputed: the detailed report would be a 503.
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    with database_unreachable():
        assert client.get(reverse(HEALTH)).json() == {"status": "ok"}
    assert monitor().get(reverse(HEALTH)).status_code == 503


def test_a_check_that_raises_is_a_failing_check_not_an_error(inline_tasks, fresh_model_and_lists):
    def broken(sender: Any, **kwargs: Any) -> list[health.Check]:
        raise RuntimeError("the host's check is broken")

    from recommendations import signals

    signals.health_checks.connect(broken, dispatch_uid="test_broken_check")
    try:
        report = health.run_checks()
    finally:
        signals.health_checks.disconnect(dispatch_uid="test_broken_check")

    assert report.failing == ["broken"]
    assert report.get("broken").message == "RuntimeError: the host's check is broken"


def test_the_settings_check_refuses_a_short_token_and_bad_limits(settings):
    base = dict(settings.RECOMMENDATIONS)
    settings.RECOMMENDATIONS = base | {
        "METRICS_TOKEN": "short",
        "HEALTH_MAX_MODEL_AGE_HOURS": 0,
        "HEALTH_MAX_LIST_AGE_HOURS": "6",
        "HEALTH_TIMEOUT_SECONDS": 60,
    }
    errors = [e for e in check_settings() if isinstance(e, Error) and e.id == "recommendations.E013"]
    assert len(errors) == 4, errors
    settings.RECOMMENDATIONS = base | {"METRICS_TOKEN": TOKEN, "HEALTH_MAX_MODEL_AGE_HOURS": None}
    assert not [e for e in check_settings() if e.id == "recommendations.E013"]
