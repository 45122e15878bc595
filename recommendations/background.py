"""Staff-started heavy work in a process of its own, for projects whose tasks run inline (no broker).

A retrain takes tens of seconds and loads TensorFlow; a precompute may load a neural model too, and so does
activating one (its artefact is loaded and checked before it serves). Run inside the admin's request, any of them would
hold the page and leave TensorFlow in the web process for good. So when `tasks.task_mode()` says "inline", the admin
starts `python -m recommendations.background <task> <run id> <task id>` instead: the same Django settings
(DJANGO_SETTINGS_MODULE and the import path are passed on), the same task function, run once in a fresh interpreter
that exits when done. The run's row is the progress report the admin page shows.

The child refuses a run whose id and task id do not match a row in its database, so a process started against the
wrong database (another settings module, a test database) does nothing. An activation's task id is its request's
token, recorded on the training run (`training.runs.request_activation`), not the run's own (training) task id.
"""

from __future__ import annotations

import logging
import os
import site
import subprocess
import sys
import sysconfig
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

if TYPE_CHECKING:
    from recommendations.models import PrecomputeRun, TrainingRun

# No app module at import time: `python -m recommendations.background` imports this before django.setup().

logger = logging.getLogger(__name__)

# task name -> (app model holding the run, the manage.py command staff can run by hand instead)
RUNNABLE: dict[str, tuple[str, str]] = {
    "retrain": ("TrainingRun", "train_recommender"),
    "precompute": ("PrecomputeRun", "precompute_recommendations"),
    "activate": (
        "TrainingRun",
        "shell -c \"from recommendations.training.runs import activate; activate({run_id}, by='manage.py shell')\"",
    ),
}
# The task function each runs (its name in tasks.py), and the run's field that holds the task id, when not the same.
FUNCTIONS = {"activate": "activate_model"}
TOKEN_FIELDS = {"activate": "gate__activation__token"}


@dataclass(frozen=True)
class Started:
    """What starting a background run did: `pid` when a process is running it, else `error` says why not."""

    pid: int | None = None
    error: str = ""


def manual_command(task: str, run_id: int | None = None) -> str:
    """The command that does the same work by hand, for messages when no process could be started."""
    return f"python manage.py {RUNNABLE[task][1]}".replace("{run_id}", str(run_id))


def _child_environment() -> dict[str, str]:
    from django.conf import settings

    # override_settings hides SETTINGS_MODULE (its holder has None); the environment still names the module.
    module = settings.SETTINGS_MODULE or os.environ.get("DJANGO_SETTINGS_MODULE")
    if not module:
        raise RuntimeError("the settings were configured in code, not by DJANGO_SETTINGS_MODULE")
    # The project's own directories (where its settings and apps import from); the interpreter finds its own.
    standard = {
        os.path.abspath(p)
        for p in [*sysconfig.get_paths().values(), *site.getsitepackages(), site.getusersitepackages()]
    }
    paths = [
        path
        for entry in sys.path
        if (path := os.path.abspath(entry or os.curdir)) not in standard and not path.endswith((".zip", "lib-dynload"))
    ]
    inherited = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": module,
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([*paths, *filter(None, inherited.split(os.pathsep))])),
    }


def start(task: str, run_id: int, task_id: str) -> Started:
    """Start `task` for run `run_id` in a new process; never raises (an error is in the answer)."""
    if task not in RUNNABLE:
        raise ValueError(f"not a background task: {task!r}")
    command = [sys.executable, "-m", "recommendations.background", task, str(run_id), task_id]
    try:
        process = subprocess.Popen(
            command,
            env=_child_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # its log lines go to stderr, the web server's log
            start_new_session=True,  # outlives a web worker that is recycled meanwhile
            close_fds=True,
        )
    except (OSError, RuntimeError) as exc:
        logger.error("could not start %s run #%s in a background process: %s", task, run_id, exc)
        return Started(error=str(exc))
    # Reap it when it exits, so a long-lived web process collects no zombies.
    threading.Thread(target=process.wait, name=f"recommendations-{task}-{run_id}", daemon=True).start()
    logger.info("%s run #%s started in background process %s", task, run_id, process.pid)
    return Started(pid=process.pid)


@dataclass(frozen=True)
class Launch:
    """How staff-started work was set off, so the admin can say what happened.

    how: "queued" (sent to the broker on commit), "background" (running in process `pid`), "deferred" (starts in a
    background process when the surrounding transaction commits) or "failed" (`error` says why; the run is marked
    failed and `command` is what to run by hand instead).
    """

    how: str
    pid: int | None = None
    error: str = ""
    command: str = ""
    task_id: str = ""


def start_retrain() -> tuple[TrainingRun, Launch]:
    """Retrain now for staff: queued on the broker, or without one in a background process (never in this one)."""
    from recommendations import tasks
    from recommendations.models import TrainingRun

    if not tasks.runs_inline():
        return tasks.enqueue_retrain(), Launch("queued")
    run = TrainingRun.objects.create(status=TrainingRun.Status.PENDING, task_id=uuid.uuid4().hex)
    return run, _start_in_background("retrain", run.pk, run.task_id, _failed_run(run, manual_command("retrain")))


def start_precompute() -> tuple[PrecomputeRun, Launch]:
    """Precompute now for staff: queued on the broker, or without one in a background process (never in this one)."""
    from recommendations import tasks
    from recommendations.models import PrecomputeRun

    if not tasks.runs_inline():
        return tasks.enqueue_precompute(), Launch("queued")
    run = PrecomputeRun.objects.create(status=PrecomputeRun.Status.PENDING, task_id=uuid.uuid4().hex)
    return run, _start_in_background("precompute", run.pk, run.task_id, _failed_run(run, manual_command("precompute")))


def start_activation(run_id: int, by: str, user_id: int | None = None, note: str = "") -> Launch:
    """Make a trained run's model serve for staff without loading it here: the request is recorded on the run, then
    a training worker (queued) or a background process checks and loads the model and makes it serve, recording
    the outcome on the run. Loading a neural model imports TensorFlow, which must stay out of the web process.

    `note` is the admin history's wording for a success (logged under `user_id` by the process that activates).
    """
    from recommendations import tasks
    from recommendations.training.runs import record_activation, request_activation

    token = request_activation(run_id, by, user_id=user_id, note=note)
    if not tasks.runs_inline():
        tasks.enqueue_activation(run_id, token)
        return Launch("queued", task_id=token)
    command = manual_command("activate", run_id)

    def give_up(error: str) -> None:
        # Nothing will ever carry the request out: say so on the run rather than leave it pending for good.
        record_activation(
            run_id, token, "not_started", reason=f"no background process could be started ({error})", command=command
        )

    return _start_in_background("activate", run_id, token, give_up, command=command)


def _failed_run(run: TrainingRun | PrecomputeRun, command: str) -> Callable[[str], None]:
    def give_up(error: str) -> None:
        # Nothing will ever pick the run up: say so on its row rather than leave it pending for good.
        note = f"Could not start a background process ({error}); run `{command}` instead."
        fields: dict[str, Any] = {"status": type(run).Status.FAILED, "error": note, "finished_at": timezone.now()}
        if hasattr(run, "message"):  # a TrainingRun says what happened in a sentence
            fields["message"] = note
        type(run).objects.filter(pk=run.pk).update(**fields)

    return give_up


def _start_in_background(
    task: str, run_id: int, task_id: str, give_up: Callable[[str], None], command: str = ""
) -> Launch:
    command = command or manual_command(task)
    outcome: list[Launch] = []

    def launch() -> None:
        started = start(task, run_id, task_id)
        if started.pid is not None:
            outcome.append(Launch("background", pid=started.pid, task_id=task_id))
            return
        give_up(started.error)
        outcome.append(Launch("failed", error=started.error, command=command, task_id=task_id))

    # The child reads the run's row, so it starts once the row is committed: at once outside a transaction.
    transaction.on_commit(launch, robust=True)
    return outcome[0] if outcome else Launch("deferred", command=command, task_id=task_id)


def run(task: str, run_id: int, task_id: str) -> int:
    """In the child: run the task for this run, in this process; returns the exit status."""
    from django.apps import apps

    from recommendations import tasks

    model = apps.get_model("recommendations", RUNNABLE[task][0])
    if not model.objects.filter(pk=run_id, **{TOKEN_FIELDS.get(task, "task_id"): task_id}).exists():
        print(f"{model.__name__} #{run_id} (task {task_id}) is not in this database; nothing ran.", file=sys.stderr)
        return 1
    function: Any = getattr(tasks, FUNCTIONS.get(task, task))
    result = function.apply(args=[run_id], task_id=task_id, throw=False)
    if result.failed():
        logger.error("%s run #%s failed: %r", task, run_id, result.result)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m recommendations.background retrain|precompute|activate <run id> <task id>`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in RUNNABLE or not argv[1].isdigit():
        print(f"usage: python -m recommendations.background {'|'.join(RUNNABLE)} <run id> <task id>", file=sys.stderr)
        return 2
    import django

    django.setup()
    return run(argv[0], int(argv[1]), argv[2])


if __name__ == "__main__":
    sys.exit(main())
