"""The broker and worker checks against a real Redis broker and a real Celery worker: a queue that fills while no
worker runs, the worker answering the ping once started (and the report failing again once it is stopped), and the
worker's task timings read from its PROMETHEUS_MULTIPROC_DIR, as a scrape on the same machine adds them up."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from recommendations import tasks
from recommendations.models import TrainingRun
from tests.factories import active_lists, closed_port, recommendations_with
from tests.test_celery_integration import TASK_TIMEOUT, running_worker
from tests.test_metrics import value

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(settings.CELERY_TASK_ALWAYS_EAGER, reason="needs CELERY_BROKER_URL (a real Redis broker)"),
]

TOKEN = "a-monitoring-token-0123456789"


def report() -> tuple[int, dict[str, Any]]:
    response = Client(headers={"Authorization": f"Bearer {TOKEN}"}).get(reverse("recommendations:health"))
    return response.status_code, response.json()


def queued(queue: str = "celery") -> float:
    response = Client(headers={"Authorization": f"Bearer {TOKEN}"}).get(reverse("recommendations:metrics"))
    return value(response.content.decode(), "recommendations_queue_length", queue=queue)


def test_the_broker_and_a_worker_answer_and_the_worker_times_its_tasks(settings, _model_dir, tmp_path):
    settings.RECOMMENDATIONS = recommendations_with(TASKS="celery", METRICS_TOKEN=TOKEN)
    TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED, is_serving=True, finished_at=timezone.now() - timedelta(hours=1)
    )
    active_lists()

    status, body = report()
    assert status == 503 and body["failing"] == ["worker"], body
    assert body["checks"]["broker"]["status"] == "ok"
    assert set(body["checks"]["broker"]["queues"]) == {"celery", tasks.TRAINING_QUEUE}
    waiting = queued()
    tasks.refresh_analytics.apply_async()  # nobody consumes it yet
    assert queued() == waiting + 1

    with running_worker(str(_model_dir), extra_env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}) as name:
        status, body = report()
        assert status == 200, body
        assert name in body["checks"]["worker"]["message"]
        assert queued() == 0  # the worker purged what earlier tests left, and ours

        tasks.refresh_analytics.apply_async().get(timeout=TASK_TIMEOUT)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        deadline = time.monotonic() + 10  # the result is stored before the worker's task_postrun signal runs
        while time.monotonic() < deadline:
            timed = registry.get_sample_value(
                "recommendations_task_seconds_count", {"task": "refresh_analytics", "state": "success"}
            )
            if timed:
                break
            time.sleep(0.1)
        assert timed == 1

    status, body = report()
    assert status == 503 and body["failing"] == ["worker"]
    assert "no worker answered" in body["checks"]["worker"]["message"]


def test_an_unreachable_broker_fails_without_waiting_on_retries(settings, monkeypatch):
    settings.RECOMMENDATIONS = recommendations_with(TASKS="celery", METRICS_TOKEN=TOKEN)
    # Celery reads the environment's broker URL before its own configuration, at every connection.
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{closed_port()}/0")

    status, body = report()

    assert status == 503
    assert {"broker", "worker"} <= set(body["failing"]), body
    assert "111" in body["checks"]["broker"]["message"]  # connection refused, said as the broker said it
    assert "not asked" in body["checks"]["worker"]["message"]
    assert body["checks"]["broker"]["ms"] < 5000
