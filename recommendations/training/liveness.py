"""Who runs a long run (a precompute, a retrain) and whether they are still alive: claim, heartbeat, takeover.

A worker killed mid-run (SIGKILL, the OOM killer, a machine gone) leaves its run "running". Celery delivers the task
again (acks_late: after the broker's visibility timeout, or at once with reject_on_worker_lost when a pool child
dies), and the beat's `recover_runs` task sends it again for every run whose heartbeat went quiet. Whichever message
comes first claims the run here; every other one finds the run finished or alive and does nothing:

- `claim` starts a pending run, or takes over a running one whose holder is gone: its heartbeat is older than
  RUN_STALE_SECONDS, or it was a process of this machine that no longer exists. The claim is one conditional UPDATE
  on the attempt counter (compare and swap), so of two takers only one wins, and the winner's attempt number fences
  off every other: whoever is not the current attempt cannot write progress, finish or fail the run.
- `Heartbeat` writes heartbeat_at every RUN_HEARTBEAT_SECONDS from a thread of its own (a long fit or a long query
  reports no progress for minutes) and notices when the row is no longer its attempt's; `check()` then raises RunLost.
- A run whose worker is lost RUN_MAX_ATTEMPTS times (a run that kills its worker every time, out of memory) fails
  with that said, instead of being handed from worker to worker for ever.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.db import connection, models
from django.utils import timezone

from recommendations.conf import rec_settings

logger = logging.getLogger(__name__)

# Both run models (PrecomputeRun, TrainingRun) use these status values.
PENDING, RUNNING, FAILED = "pending", "running", "failed"


class RunLost(Exception):
    """This attempt no longer owns its run: another worker took it over, or the run was finished meanwhile."""


@functools.cache
def _namespace() -> str:
    """This boot of this machine's process-id space: pids are comparable only inside it (containers have their own)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        space = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}:{space}".encode()).hexdigest()[:8]


def this_process() -> str:
    """What a run's `worker` records of the process running it: host:pid, and the pid space after a slash."""
    return f"{socket.gethostname()}:{os.getpid()}/{_namespace()}"


def holder_gone(worker: str) -> bool:
    """True only when `worker` names a process of this machine's pid space that has ended (or is a zombie).

    Elsewhere nothing can be said from here, and the heartbeat decides.
    """
    name, _, space = worker.rpartition("/")
    host, _, pid_text = name.rpartition(":")
    if not space or space != _namespace() or host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")  # killed, and not yet reaped by its parent


def stale_after() -> timedelta:
    return timedelta(seconds=float(rec_settings.RUN_STALE_SECONDS))


def is_lost(run: Any, now: datetime | None = None) -> bool:
    """A running run whose holder is gone: no heartbeat for RUN_STALE_SECONDS, or its process here has ended."""
    if run.status != RUNNING:
        return False
    seen = run.heartbeat_at or run.started_at
    if seen is None or seen < (now or timezone.now()) - stale_after():
        return True
    return holder_gone(run.worker)


def lost_runs(model: type[models.Model]) -> list[Any]:
    """The runs of `model` that are running without a live holder (few rows: only running ones are read)."""
    now = timezone.now()
    return [run for run in model.objects.filter(status=RUNNING).order_by("pk") if is_lost(run, now)]


def unsent_runs(model: type[models.Model]) -> list[Any]:
    """Pending runs older than RUN_STALE_SECONDS: their message never reached a worker (the broker was down when
    they were queued) or is stuck behind others. Sending one again is safe: the first message to arrive claims it."""
    cutoff = timezone.now() - stale_after()
    return list(model.objects.filter(status=PENDING, created_at__lt=cutoff).order_by("pk"))


@dataclass(frozen=True)
class Claim:
    """What `claim` did: `attempt` is this worker's fencing token, None when it must do nothing (`why` says why)."""

    run: Any
    attempt: int | None
    why: str  # "started", "taken over", "finished", "alive", "raced", "exhausted"
    previous: Any = None  # the row as it was before this claim (None for a new run)

    @property
    def took_over(self) -> bool:
        return self.why == "taken over"


def start_new(model: type[models.Model], task_id: str = "", **fields: Any) -> Claim:
    """A new run, claimed by this process from the start (the beat's runs, the management commands)."""
    now = timezone.now()
    run = model.objects.create(
        status=RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=1,
        worker=this_process(),
        task_id=task_id,
        **fields,
    )
    return Claim(run, 1, "started")


def claim(
    model: type[models.Model], run_id: int, *, task_id: str = "", force: bool = False, reset: dict | None = None
) -> Claim:
    """Claim run `run_id` for this process: start it if pending, take it over if its holder is lost.

    `force`: the caller proved the holder gone another way (a retrain holding the single-flight lock). `reset`: the
    run's own fields a new attempt clears (progress, stage, error are always cleared). Raises DoesNotExist.
    """
    run = model.objects.get(pk=run_id)
    now = timezone.now()
    if run.status not in (PENDING, RUNNING):
        return Claim(run, None, "finished")
    takeover: dict[str, Any] | None = None
    if run.status == RUNNING:
        if not force and not is_lost(run, now):
            return Claim(run, None, "alive")
        seen = run.heartbeat_at or run.started_at
        takeover = {
            "at": now.isoformat(),
            "attempt": run.attempts + 1,
            "lost_worker": run.worker,
            "last_heartbeat": seen.isoformat() if seen else None,
            "stage": run.stage,
            "by": this_process(),
        }
    same_row = model.objects.filter(pk=run_id, attempts=run.attempts, status=run.status)
    if takeover is not None and run.attempts >= int(rec_settings.RUN_MAX_ATTEMPTS):
        error = (
            f"Gave up after {run.attempts} attempts: the worker running it was lost each time "
            f"(last seen at stage {run.stage or 'start'!r}; out of memory?)."
        )
        gave_up = {**takeover, "gave_up": True}
        if not same_row.update(status=FAILED, finished_at=now, error=error, takeovers=[*run.takeovers, gave_up]):
            return Claim(model.objects.get(pk=run_id), None, "raced", run)
        logger.error("%s #%s: %s", model.__name__, run_id, error)
        return Claim(model.objects.get(pk=run_id), None, "exhausted", run)
    fields: dict[str, Any] = {
        "status": RUNNING,
        "attempts": run.attempts + 1,
        "heartbeat_at": now,
        "worker": this_process(),
        "task_id": task_id or run.task_id,
        "progress": 0.0,
        "stage": "",
        "error": "",
        **(reset or {}),
    }
    if run.started_at is None:
        fields["started_at"] = now
    if takeover is not None:
        fields["takeovers"] = [*run.takeovers, takeover]
    # Compare and swap on the attempt counter: of two takers reading the same row, the second UPDATE finds the
    # counter moved (PostgreSQL re-reads the row once the first commits) and changes nothing.
    if not same_row.update(**fields):
        return Claim(model.objects.get(pk=run_id), None, "raced", run)
    previous, run = run, model.objects.get(pk=run_id)
    if takeover is not None:
        logger.warning(
            "%s #%s taken over (attempt %s): its worker %s was lost, last heartbeat %s at stage %r",
            model.__name__,
            run_id,
            run.attempts,
            takeover["lost_worker"] or "(unknown)",
            takeover["last_heartbeat"],
            takeover["stage"],
        )
    return Claim(run, run.attempts, "taken over" if takeover is not None else "started", previous)


def fenced(model: type[models.Model], run_id: int, attempt: int) -> models.QuerySet:
    """The run's row only while `attempt` still owns it (running, and nobody took it over since)."""
    return model.objects.filter(pk=run_id, attempts=attempt, status=RUNNING)


def fenced_update(model: type[models.Model], run_id: int, attempt: int, **fields: Any) -> None:
    """Update the run as `attempt`; RunLost when that attempt no longer owns it."""
    if not fenced(model, run_id, attempt).update(**fields):
        raise RunLost(f"{model.__name__} #{run_id}: attempt {attempt} no longer owns the run")


class Heartbeat:
    """While the block runs, a thread writes the run's heartbeat every RUN_HEARTBEAT_SECONDS (as `attempt`).

    A thread because the work itself may be silent for minutes (one long fit, one long query). Inside a transaction
    (a caller's atomic block) no other connection could see the run's row, so no thread starts; the run's
    RunProgress, which writes the heartbeat with its progress on the same connection, carries it then.
    """

    def __init__(self, model: type[models.Model], run_id: int, attempt: int) -> None:
        self.model, self.run_id, self.attempt = model, run_id, attempt
        self.interval = float(rec_settings.RUN_HEARTBEAT_SECONDS)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """One heartbeat; False (and `lost` set) once the run is no longer this attempt's.

        A run this attempt already finished needs no more beats and is not lost: the block may still be winding down
        (a task the run's commit chained, run in the same process), so the thread just stops.
        """
        if fenced(self.model, self.run_id, self.attempt).update(heartbeat_at=timezone.now()):
            return True
        if self.model.objects.filter(pk=self.run_id, attempts=self.attempt).exclude(status=RUNNING).exists():
            self._stop.set()
            return True
        self.lost.set()
        return False

    def check(self) -> None:
        if self.lost.is_set():
            raise RunLost(f"{self.model.__name__} #{self.run_id}: attempt {self.attempt} was taken over")

    def __enter__(self) -> Heartbeat:
        if not connection.in_atomic_block:
            self._thread = threading.Thread(
                target=self._run, name=f"heartbeat {self.model.__name__} #{self.run_id}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 10)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not self.beat():
                        logger.warning(
                            "%s #%s: attempt %s no longer owns the run (taken over); it stops at its next step",
                            self.model.__name__,
                            self.run_id,
                            self.attempt,
                        )
                        return
                except Exception:  # the database away for a moment: the next beat tries again, on a new connection
                    logger.warning("heartbeat of %s #%s failed", self.model.__name__, self.run_id, exc_info=True)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection
