"""Claim, heartbeat and takeover of long runs (training.liveness): of two takers one wins, a live run is left alone,
a lost one is taken over once, the loser of a takeover can no longer write, and a run lost too often gives up."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from recommendations.models import PrecomputeRun, TrainingRun
from recommendations.training import liveness
from recommendations.training.progress import RunProgress
from tests.factories import recommendations_with

pytestmark = pytest.mark.django_db

ELSEWHERE = "another-host:4242/0badc0de"  # a process of another machine: only its heartbeat can say it is gone


def running(model=PrecomputeRun, *, seconds_ago: float, worker: str = ELSEWHERE, attempts: int = 1, **fields):
    """A run some worker claimed, whose last heartbeat was `seconds_ago`."""
    beat = timezone.now() - timedelta(seconds=seconds_ago)
    return model.objects.create(
        status="running", started_at=beat, heartbeat_at=beat, attempts=attempts, worker=worker, **fields
    )


def worker_of(pid: int) -> str:
    """What `worker` says of process `pid` of this machine."""
    return liveness.this_process().replace(f":{os.getpid()}/", f":{pid}/")


def ended_process() -> str:
    """The `worker` of a process of this machine that has ended (started, exited and reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return worker_of(child.pid)


def test_a_pending_run_is_claimed_once_and_then_left_to_its_worker():
    run = PrecomputeRun.objects.create()
    first = liveness.claim(PrecomputeRun, run.pk, task_id="t1")
    assert (first.attempt, first.why) == (1, "started")
    assert first.run.status == "running" and first.run.worker == liveness.this_process()
    assert first.run.heartbeat_at is not None and first.run.task_id == "t1"

    again = liveness.claim(PrecomputeRun, run.pk, task_id="t1")  # the same message, delivered twice
    assert (again.attempt, again.why) == (None, "alive")
    PrecomputeRun.objects.filter(pk=run.pk).update(status="succeeded")
    assert liveness.claim(PrecomputeRun, run.pk).why == "finished"
    assert PrecomputeRun.objects.get(pk=run.pk).attempts == 1


def test_a_run_whose_heartbeat_went_quiet_is_taken_over_and_the_takeover_is_recorded(settings):
    settings.RECOMMENDATIONS = recommendations_with(RUN_STALE_SECONDS=60, RUN_HEARTBEAT_SECONDS=10)
    alive = running(seconds_ago=30, stage="similar")
    assert liveness.claim(PrecomputeRun, alive.pk).why == "alive"

    lost = running(seconds_ago=61, stage="similar")
    claimed = liveness.claim(PrecomputeRun, lost.pk, task_id="t2")
    assert claimed.took_over and claimed.attempt == 2
    (record,) = claimed.run.takeovers
    assert record["attempt"] == 2 and record["lost_worker"] == ELSEWHERE and record["stage"] == "similar"
    assert record["last_heartbeat"] == lost.heartbeat_at.isoformat()
    assert claimed.run.worker == liveness.this_process() and claimed.run.started_at == lost.started_at

    # The lost attempt, should it still be alive, can no longer write to the run.
    with pytest.raises(liveness.RunLost):
        liveness.fenced_update(PrecomputeRun, lost.pk, 1, stage="for_you")
    assert not liveness.Heartbeat(PrecomputeRun, lost.pk, 1).beat()
    progress = RunProgress(lost, None, {"similar": 1.0}, attempt=1)
    with pytest.raises(liveness.RunLost):
        progress.start("similar")
    assert PrecomputeRun.objects.get(pk=lost.pk).stage == ""  # as the new attempt left it


def test_a_run_held_by_an_ended_process_of_this_machine_is_taken_over_at_once():
    gone = running(TrainingRun, seconds_ago=0, worker=ended_process())
    assert liveness.is_lost(gone)
    assert liveness.claim(TrainingRun, gone.pk).took_over

    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as sleeper:
        try:
            alive = running(TrainingRun, seconds_ago=0, worker=worker_of(sleeper.pid))
            assert not liveness.is_lost(alive)
            assert liveness.claim(TrainingRun, alive.pk).why == "alive"
        finally:
            sleeper.kill()


def test_a_run_lost_at_every_attempt_gives_up_and_says_so(settings):
    settings.RECOMMENDATIONS = recommendations_with(RUN_MAX_ATTEMPTS=2, RUN_STALE_SECONDS=60, RUN_HEARTBEAT_SECONDS=10)
    run = running(seconds_ago=600, attempts=1, stage="load events")
    assert liveness.claim(PrecomputeRun, run.pk).attempt == 2
    PrecomputeRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=600))

    gave_up = liveness.claim(PrecomputeRun, run.pk)
    assert gave_up.why == "exhausted" and gave_up.attempt is None
    assert gave_up.run.status == "failed" and "Gave up after 2 attempts" in gave_up.run.error
    assert [t.get("gave_up", False) for t in gave_up.run.takeovers] == [False, True]


def test_lost_runs_lists_only_running_runs_without_a_live_holder(settings):
    settings.RECOMMENDATIONS = recommendations_with(RUN_STALE_SECONDS=60, RUN_HEARTBEAT_SECONDS=10)
    quiet = running(seconds_ago=120)
    running(seconds_ago=5)
    PrecomputeRun.objects.create(status="succeeded", heartbeat_at=timezone.now() - timedelta(hours=1))
    never = PrecomputeRun.objects.create(status="running")  # claimed by code from before heartbeats
    assert [run.pk for run in liveness.lost_runs(PrecomputeRun)] == [quiet.pk, never.pk]


@pytest.mark.django_db(transaction=True)
def test_of_two_workers_taking_over_the_same_run_at_once_only_one_wins(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL")
    lost = running(seconds_ago=3600)
    # Both takers read the row and find it lost before either writes: the race the conditional UPDATE must settle.
    both_read = threading.Barrier(2, timeout=30)
    really_lost = liveness.is_lost

    def is_lost_then_wait(run, now=None):
        answer = really_lost(run, now)
        both_read.wait()
        return answer

    monkeypatch.setattr(liveness, "is_lost", is_lost_then_wait)
    claims: list[liveness.Claim] = []

    def take() -> None:
        try:
            claims.append(liveness.claim(PrecomputeRun, lost.pk, task_id=threading.current_thread().name))
        finally:
            connection.close()

    takers = [threading.Thread(target=take, name=f"taker-{i}") for i in range(2)]
    for taker in takers:
        taker.start()
    for taker in takers:
        taker.join(60)

    assert sorted(c.why for c in claims) == ["raced", "taken over"]
    winner = next(c for c in claims if c.attempt is not None)
    run = PrecomputeRun.objects.get(pk=lost.pk)
    assert run.attempts == winner.attempt == 2 and len(run.takeovers) == 1
    assert run.task_id == winner.run.task_id


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_keeps_a_run_alive_and_notices_a_takeover(settings):
    settings.RECOMMENDATIONS = recommendations_with(RUN_HEARTBEAT_SECONDS=0.05, RUN_STALE_SECONDS=1)
    claimed = liveness.start_new(PrecomputeRun)
    first_beat = claimed.run.heartbeat_at
    with liveness.Heartbeat(PrecomputeRun, claimed.run.pk, claimed.attempt) as heartbeat:
        deadline = time.monotonic() + 10
        while PrecomputeRun.objects.get(pk=claimed.run.pk).heartbeat_at == first_beat:
            assert time.monotonic() < deadline, "no heartbeat was written"
            time.sleep(0.02)
        heartbeat.check()  # still its own
        # Another worker takes the run over (as if this one had been paused for longer than RUN_STALE_SECONDS).
        PrecomputeRun.objects.filter(pk=claimed.run.pk).update(attempts=2, heartbeat_at=timezone.now())
        assert heartbeat.lost.wait(10)
        with pytest.raises(liveness.RunLost):
            heartbeat.check()
    assert PrecomputeRun.objects.get(pk=claimed.run.pk).attempts == 2


def test_the_system_check_refuses_a_stale_time_within_three_heartbeats(settings):
    from recommendations.conf import check_settings

    settings.RECOMMENDATIONS = recommendations_with(RUN_HEARTBEAT_SECONDS=30, RUN_STALE_SECONDS=60)
    assert any(e.id == "recommendations.E014" and "three times" in e.msg for e in check_settings())
    settings.RECOMMENDATIONS = recommendations_with(RUN_MAX_ATTEMPTS=0)
    assert any(e.id == "recommendations.E014" and "RUN_MAX_ATTEMPTS" in e.msg for e in check_settings())
    settings.RECOMMENDATIONS = recommendations_with(RUN_HEARTBEAT_SECONDS=5, RUN_STALE_SECONDS=15, RUN_MAX_ATTEMPTS=3)
    assert not [e for e in check_settings() if e.id == "recommendations.E014"]


@pytest.mark.django_db(transaction=True)
def test_a_run_finished_while_its_heartbeat_block_winds_down_is_not_taken_for_lost(settings, caplog):
    settings.RECOMMENDATIONS = recommendations_with(RUN_HEARTBEAT_SECONDS=0.05, RUN_STALE_SECONDS=1)
    claimed = liveness.start_new(PrecomputeRun)
    with liveness.Heartbeat(PrecomputeRun, claimed.run.pk, claimed.attempt) as heartbeat:
        # The run ends as its own attempt (a retrain registers, then a chained task runs in the same process).
        PrecomputeRun.objects.filter(pk=claimed.run.pk).update(status=PrecomputeRun.Status.SUCCEEDED)
        deadline = time.monotonic() + 10
        while heartbeat._thread is not None and heartbeat._thread.is_alive():
            assert time.monotonic() < deadline, "the heartbeat kept beating a finished run"
            time.sleep(0.02)
        heartbeat.check()  # not lost
    assert "no longer owns the run" not in caplog.text
