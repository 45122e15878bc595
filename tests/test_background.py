"""Without a broker, the admin's "Retrain now" / "Run precompute now" start a background process and say so; the web
process never runs the work or loads TensorFlow.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any

import pytest
from django.urls import reverse

from recommendations import background
from recommendations.models import PrecomputeRun, TrainingRun
from tests.factories import make_small_shop

pytestmark = pytest.mark.django_db


def wait_until_finished(model: Any, pk: int, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = model.objects.get(pk=pk)
        if run.status not in ("pending", "running"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"{model.__name__} #{pk} still {model.objects.get(pk=pk).status} after {seconds} s")


def wait_until_exited(text: str, seconds: float) -> None:
    """The run's row says done before its process is: a retrain goes on to precompute the lists it trained. The
    process must be gone before the test's database is emptied, or its writes land in the next test."""
    match = re.search(r"background process \(pid (\d+)\)", text)
    assert match, text
    pid = int(match.group(1))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"background process {pid} still running after {seconds} s")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_retrain_now_without_a_broker_runs_in_a_background_process(no_broker, staff_client, monkeypatch):
    from tests.factories import write_synthetic_shop

    write_synthetic_shop()
    had_tensorflow = "tensorflow" in sys.modules

    def not_here(*args, **kwargs):
        raise AssertionError("the web process ran the training itself")

    monkeypatch.setattr("recommendations.training.runs.run_training", not_here)
    started = time.monotonic()
    response = staff_client.post(reverse("admin:recommendations_trainingrun_retrain_now"), follow=True)
    seconds = time.monotonic() - started

    run = TrainingRun.objects.get()
    text = response.content.decode()
    assert seconds < 5, f"the admin request took {seconds:.1f} s"
    assert f"Training run #{run.pk} started in a background process (pid " in text, text
    assert "queued" not in text
    assert had_tensorflow or "tensorflow" not in sys.modules
    finished = wait_until_finished(TrainingRun, run.pk, 300)
    assert finished.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.KEPT_OLD), finished.error
    assert finished.task_id == run.task_id and finished.chosen
    wait_until_exited(text, 300)
    page = staff_client.get(reverse("admin:recommendations_trainingrun_changelist")).content.decode()
    assert "Succeeded" in page


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_precompute_now_without_a_broker_runs_in_a_background_process(no_broker, staff_client, monkeypatch):
    make_small_shop()
    monkeypatch.setattr("recommendations.lists.precompute.run_precompute", lambda *a, **k: 1 / 0)
    response = staff_client.post(reverse("admin:recommendations_precomputerun_run_now"), follow=True)
    run = PrecomputeRun.objects.get()
    text = response.content.decode()
    assert f"Precompute run #{run.pk} started in a background process" in text
    finished = wait_until_finished(PrecomputeRun, run.pk, 120)
    assert finished.status == PrecomputeRun.Status.SUCCEEDED, finished.error
    assert finished.recommendation_set_id
    wait_until_exited(text, 120)


@pytest.mark.django_db(transaction=True)
def test_when_no_process_can_start_the_admin_says_what_to_run(no_broker, staff_client, monkeypatch):
    def cannot(*args, **kwargs):
        raise OSError("no fork for you")

    monkeypatch.setattr(background.subprocess, "Popen", cannot)
    response = staff_client.post(reverse("admin:recommendations_trainingrun_retrain_now"), follow=True)
    run = TrainingRun.objects.get()
    text = response.content.decode()
    assert f"Training run #{run.pk} was not started" in text and "no fork for you" in text
    assert "python manage.py train_recommender" in text
    assert run.status == TrainingRun.Status.FAILED, "it will never run: it does not stay pending"


def test_inside_a_transaction_the_process_starts_on_commit(
    staff_client, monkeypatch, settings, django_capture_on_commit_callbacks
):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "inline"}
    calls: list[dict[str, Any]] = []

    class FakeProcess:
        pid = 4242

        def __init__(self, command, **kwargs):
            calls.append({"command": command, **kwargs})

        def wait(self):
            return 0

    monkeypatch.setattr(background.subprocess, "Popen", FakeProcess)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(reverse("admin:recommendations_precomputerun_run_now"), follow=True)
    run = PrecomputeRun.objects.get()
    assert "will start in a background process once this request" in response.content.decode()
    assert calls == [], "not before the run's row is committed"
    for callback in callbacks:
        callback()
    [call] = calls
    assert call["command"] == [
        sys.executable,
        "-m",
        "recommendations.background",
        "precompute",
        str(run.pk),
        run.task_id,
    ]
    assert call["env"]["DJANGO_SETTINGS_MODULE"] == os.environ["DJANGO_SETTINGS_MODULE"]


def test_the_background_runner_refuses_a_run_of_another_database():
    run = PrecomputeRun.objects.create(task_id="abc")
    assert background.run("precompute", run.pk, "not-abc") == 1
    assert PrecomputeRun.objects.get(pk=run.pk).status == PrecomputeRun.Status.PENDING
