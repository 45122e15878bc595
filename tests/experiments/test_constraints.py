"""One running experiment per placement is held by the database (rec_experiment_one_running_per_placement), and
Start turns the database's refusal into the sentence staff already get from its own check. Real PostgreSQL: the race
is two real connections, one holding an uncommitted running experiment while the admin's Start waits on it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from recommendations.experiments import operations
from recommendations.models import Experiment, ExperimentVariant
from tests.factories import make_user


def experiment(name: str, placement: str = "for_you", status: str = Experiment.Status.DRAFT) -> Experiment:
    row = Experiment.objects.create(name=name, placement=placement, status=status)
    for arm, strategy in (("A", "model"), ("B", "trending")):
        ExperimentVariant.objects.create(experiment=row, name=arm, share=1, strategy=strategy)
    return row


@pytest.mark.django_db
def test_the_database_refuses_a_second_running_experiment_on_a_placement():
    experiment("first", status=Experiment.Status.RUNNING)
    # Any number of drafts and stopped ones, and running ones elsewhere, are fine.
    experiment("draft")
    experiment("stopped", status=Experiment.Status.STOPPED)
    experiment("stopped too", status=Experiment.Status.STOPPED)
    experiment("elsewhere", placement="similar", status=Experiment.Status.RUNNING)

    with pytest.raises(IntegrityError, match="rec_experiment_one_running_per_placement"), transaction.atomic():
        experiment("second", status=Experiment.Status.RUNNING)

    draft = Experiment.objects.get(name="draft")
    draft.status = Experiment.Status.RUNNING
    with pytest.raises(IntegrityError), transaction.atomic():
        draft.save(update_fields=["status"])
    assert Experiment.objects.filter(placement="for_you", status="running").count() == 1


def _hold_a_running_experiment(ready: threading.Event, failures: list[BaseException]) -> None:
    """In its own connection: insert a running experiment on for_you, and commit it only once another session waits
    on it (so that session's check ran before the row was visible, and only the constraint can stop it)."""
    try:
        with transaction.atomic():
            Experiment.objects.create(
                name="sneaked in", placement="for_you", status=Experiment.Status.RUNNING, started_at=timezone.now()
            )
            ready.set()
            deadline = time.monotonic() + 20
            with connection.cursor() as cursor:
                while time.monotonic() < deadline:
                    # pg_stat_activity is read once per transaction unless the snapshot is dropped.
                    cursor.execute("SELECT pg_stat_clear_snapshot()")
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE \"recommendations_experiment\"%'"
                    )
                    if cursor.fetchone()[0]:
                        break
                    time.sleep(0.02)
                else:
                    raise AssertionError("Start never waited on the uncommitted running experiment")
    except BaseException as exc:  # reported to the test, which would otherwise hang or pass on a half-run race
        failures.append(exc)
        ready.set()
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_start_turns_the_constraint_into_the_usual_message(client):
    late = experiment("late")
    user = make_user(is_staff=True, is_superuser=True)
    client.force_login(user)
    ready, failures = threading.Event(), []
    holder = threading.Thread(target=_hold_a_running_experiment, args=(ready, failures))
    holder.start()
    assert ready.wait(20)

    response = client.post(reverse("admin:recommendations_experiment_start", args=[late.pk]), follow=True)

    holder.join(20)
    assert not holder.is_alive() and not failures, failures
    text = response.content.decode()
    assert "“late” was not started: “sneaked in” already runs on for_you; stop it first." in text
    late.refresh_from_db()
    assert (late.status, late.salt, late.started_at) == ("draft", "", None)
    assert not LogEntry.objects.exists()
    assert list(Experiment.objects.filter(status="running").values_list("name", flat=True)) == ["sneaked in"]


@pytest.mark.django_db(transaction=True)
def test_start_after_the_other_one_stopped_goes_through():
    other = experiment("other", status=Experiment.Status.RUNNING)
    late = experiment("late")
    with pytest.raises(operations.ExperimentError, match=r"“other” already runs on for_you; stop it first\."):
        operations.start(late.pk)
    operations.stop(other.pk)

    started = operations.start(late.pk)

    assert started.status == "running" and started.started_at > timezone.now() - timedelta(minutes=1)
