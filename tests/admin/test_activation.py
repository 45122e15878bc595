"""Activating a model from the admin never loads it in the web process (issue 17, item 9).

The admin records the request on the run and starts the work elsewhere: on the training queue with Celery, or in a
background process without a broker (`recommendations.background`). That process hash-checks and loads the model
(a neural one imports TensorFlow), makes it serve, records the outcome on the run and logs it under who asked.
The Celery path is tested with a stand-in worker in tests/admin/test_training.py and test_runs_operations.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.urls import reverse

from recommendations import background, tasks
from recommendations.models import TrainingRun
from tests.factories import serving_pk, train_two_runs, write_synthetic_shop

ROLL_BACK = "admin:recommendations_trainingrun_roll_back"


@pytest.fixture
def two_runs(monkeypatch) -> tuple[TrainingRun, TrainingRun]:
    """Two runs, the second serving; this process may no longer activate a model itself."""
    write_synthetic_shop()
    first, second = train_two_runs()

    def not_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the web process activated (loaded) the model itself")

    monkeypatch.setattr("recommendations.training.runs.activate", not_here)
    return first, second


def wait_for_outcome(run: TrainingRun, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request = (TrainingRun.objects.get(pk=run.pk).gate or {}).get("activation") or {}
        if request.get("state") not in (None, "pending"):
            return request
        time.sleep(0.3)
    raise AssertionError(f"the activation of run #{run.pk} was still pending after {seconds} s")


def run_page(client, run: TrainingRun) -> str:
    return client.get(reverse("admin:recommendations_trainingrun_change", args=[run.pk])).content.decode()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_roll_back_without_a_broker_loads_the_model_in_a_background_process(
    no_broker, two_runs, staff_client, admin_user
):
    first, second = two_runs
    had_tensorflow = "tensorflow" in sys.modules
    started = time.monotonic()
    response = staff_client.post(reverse(ROLL_BACK), follow=True)
    seconds = time.monotonic() - started

    text = response.content.decode()
    assert seconds < 5, f"the admin request took {seconds:.1f} s"
    assert f"Rolling back. Training run #{first.pk} is being checked in a background process (pid " in text, text
    assert "will serve once its model loads" in text
    assert had_tensorflow or "tensorflow" not in sys.modules
    assert "Being checked (asked by" in run_page(staff_client, first)

    outcome = wait_for_outcome(first, 120)

    assert outcome["state"] == "activated", outcome
    assert serving_pk() == first.pk
    first.refresh_from_db()
    assert first.activated_by == admin_user.get_username()
    [entry] = LogEntry.objects.filter(object_id=str(first.pk), action_flag=CHANGE)
    assert entry.user_id == admin_user.pk
    assert entry.get_change_message() == f"Rolled back to this run's model (before: run #{second.pk})."
    assert f"before it, run #{second.pk} served" in run_page(staff_client, first)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_corrupt_artefact_ends_refused_with_its_reason_on_the_run_page(no_broker, two_runs, staff_client):
    first, second = two_runs
    victim = sorted(Path(first.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    activate = reverse("admin:recommendations_trainingrun_activate", args=[first.pk])

    text = staff_client.post(activate, follow=True).content.decode()

    assert f"Training run #{first.pk} is being checked in a background process" in text
    outcome = wait_for_outcome(first, 120)
    assert outcome["state"] == "refused" and "hash check" in outcome["reason"], outcome
    page = run_page(staff_client, first)
    assert "Refused at" in page and "hash check" in page and "The serving model is unchanged." in page
    assert serving_pk() == second.pk
    assert not LogEntry.objects.filter(action_flag=CHANGE).exists()


@pytest.mark.django_db(transaction=True)
def test_when_no_process_can_start_the_admin_and_the_run_say_what_to_run(
    no_broker, two_runs, staff_client, monkeypatch
):
    first, second = two_runs

    def cannot(*args: Any, **kwargs: Any) -> None:
        raise OSError("no fork for you")

    monkeypatch.setattr(background.subprocess, "Popen", cannot)
    activate = reverse("admin:recommendations_trainingrun_activate", args=[first.pk])

    text = staff_client.post(activate, follow=True).content.decode()

    assert f"Training run #{first.pk} was not activated: no background process could be started" in text
    assert "no fork for you" in text and "python manage.py shell -c" in text
    assert f"activate({first.pk}, by=" in text
    assert "The serving model is unchanged." in text
    assert "Not activated (asked by" in run_page(staff_client, first)
    assert serving_pk() == second.pk


def test_the_background_runner_refuses_an_activation_of_another_database(db):
    run = TrainingRun.objects.create(status=TrainingRun.Status.SUCCEEDED, gate={"activation": {"token": "abc"}})
    assert background.run("activate", run.pk, "not-abc") == 1


def test_the_activation_task_goes_to_the_training_queue():
    assert tasks.activate_model.name == "recommendations.tasks.activate_model"
    assert tasks.activate_model.queue == tasks.TRAINING_QUEUE
