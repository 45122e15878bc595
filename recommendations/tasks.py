"""Celery tasks: thin, idempotent, ids in; each is one call into the engine.

`retrain` and `activate_model` are the tasks that import TensorFlow (fitting or loading a neural model): they go to
their own queue, TRAINING_QUEUE, served by a worker started with `-Q recommendations-training --pool solo` (or
`--max-tasks-per-child 1`), so a TensorFlow-using process never forks. Everything else, precompute and refresh
included, scores with numpy and runs on the default queue.

Where the work runs is decided in one place, `task_mode()`, from the app's own RECOMMENDATIONS["TASKS"] setting:
"celery" sends every task to the broker, "inline" runs it in this process after commit, and "auto" (the default)
runs inline when the host has no Celery app of its own, no broker_url, or task_always_eager set, so a host without
Celery never waits on a connection to a broker nobody runs. Staff-started heavy work (retrain, precompute, activating
a model) never runs inline in a web process: `recommendations.background` starts it in a process of its own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from celery import _state as celery_state
from celery import chord, current_app, shared_task
from django.core.cache import cache
from django.db import OperationalError, transaction

from recommendations import breaker
from recommendations.conf import rec_settings
from recommendations.holds import Hold
from recommendations.keys import refresh_pending as refresh_key
from recommendations.models import PrecomputeRun, TrainingRun

logger = logging.getLogger(__name__)

TRAINING_QUEUE = "recommendations-training"

# Every task here may be delivered twice and does its work once (a finished run, a rewritten list, a deleted event is
# not done again; training.liveness fences the long runs), so each is acknowledged only once it has finished
# (acks_late) and goes back on the queue when the process running it dies (reject_on_worker_lost; without it Celery
# acknowledges a task whose pool process was killed as failed, and the work is lost). Set on each task, not in the
# host's Celery configuration: it is a property of these tasks, and a host's own tasks that are not idempotent keep
# Celery's defaults. docs/operations.md ("When a worker dies") has the broker side (visibility timeout, prefetch).
REDELIVERED: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}

CELERY, INLINE = "celery", "inline"
NO_APP, NO_BROKER = "auto: the project has no Celery app", "auto: the Celery app has no broker_url"
ANNOUNCED: Hold[str, tuple[str, str]] = Hold("task mode announced", 1, owner=__name__)
"""The (mode, reason) this process last logged, under "mode": said once, and again only if the answer changes."""


def task_mode() -> str:
    """Where the app's tasks run: "celery" (a broker and workers) or "inline" (in this process, after commit).

    The one place that decides, from RECOMMENDATIONS["TASKS"]; every caller asks here, so a host without Celery
    never publishes to a broker it does not run. Logged once per process (and again only if the answer changes).
    """
    mode, reason = _decide_task_mode()
    if ANNOUNCED.get("mode") != (mode, reason):
        ANNOUNCED.put("mode", (mode, reason))
        if mode == INLINE:
            # A warning when the host may not know (no Celery app, no broker); a note when it chose this (eager, TASKS).
            log = logger.warning if reason in (NO_APP, NO_BROKER) else logger.info
            log(
                "recommendations: tasks run in-process, not on a Celery broker (%s); RECOMMENDATIONS['TASKS'] "
                "= 'celery' sends them to workers.",
                reason,
            )
    return mode


def _decide_task_mode() -> tuple[str, str]:
    setting = rec_settings.TASKS
    if setting in (CELERY, INLINE):
        return setting, f"RECOMMENDATIONS['TASKS'] is {setting!r}"
    app = current_app._get_current_object()
    # Celery makes a fallback app named "default" (no Django fix-up, no configuration) when the host created none.
    if app is celery_state.default_app and app.main == "default" and not app.fixups:
        return INLINE, NO_APP
    if app.conf.task_always_eager:
        return INLINE, "auto: the Celery app runs tasks eagerly (task_always_eager)"
    if not app.conf.broker_url:
        return INLINE, NO_BROKER
    return CELERY, "auto: the Celery app has a broker"


def runs_inline() -> bool:
    """True when the app's tasks run in this process (see task_mode)."""
    return task_mode() == INLINE


def _send(task: Any, *, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
    """Send a task the way task_mode() says: to the broker, or run now in this process.

    Inline calls `apply`, never `apply_async`: even eager Celery acquires a broker connection (and kombu warns about
    memory:// having no hostname) before it runs the task locally.
    """
    if runs_inline():
        options.pop("countdown", None)
        return task.apply(args=args, kwargs=kwargs, task_id=options.get("task_id"))
    return task.apply_async(args=args, kwargs=kwargs, **options)


@shared_task(bind=True, name="recommendations.tasks.retrain", queue=TRAINING_QUEUE, **REDELIVERED)
def retrain(self: Any, run_id: int | None = None) -> dict[str, Any] | None:
    """Retrain (run `run_id`, or a fresh run from the beat schedule); single-flight, so a second one skips.

    A redelivered message for a finished run, or for one whose worker is alive, does nothing; one for a run whose
    worker was lost takes it over and starts it again (training.liveness).
    """
    from recommendations.training.runs import TrainingError, run_training

    try:
        run = run_training(run_id, task_id=self.request.id or "")
    except TrainingRun.DoesNotExist:
        logger.warning("training run #%s does not exist", run_id)
        return None
    except TrainingError as exc:
        # Recorded on the run; a failed retrain leaves the serving model in place, nothing to retry.
        logger.warning("retrain failed: %s", exc)
        run = TrainingRun.objects.get(pk=run_id) if run_id else TrainingRun.objects.order_by("-pk").first()
    return {"run_id": run.pk, "status": run.status, "chosen": run.chosen} if run else None


def enqueue_retrain() -> TrainingRun:
    """Record a pending training run now and send it to the training queue when the transaction commits."""
    task_id = uuid.uuid4().hex
    run = TrainingRun.objects.create(status=TrainingRun.Status.PENDING, task_id=task_id)
    transaction.on_commit(lambda: _send(retrain, args=[run.pk], task_id=task_id), robust=True)
    return run


@shared_task(bind=True, name="recommendations.tasks.activate_model", queue=TRAINING_QUEUE, **REDELIVERED)
def activate_model(self: Any, run_id: int) -> dict[str, Any]:
    """Make run `run_id`'s model serve as staff asked in the admin (the request's token is this task's id).

    On the training queue, because loading a neural model imports TensorFlow: the web process only records the
    request. The outcome is recorded on the run; a success is logged in the admin history under who asked.
    """
    from recommendations.training.runs import activate_requested

    outcome = activate_requested(run_id, self.request.id or "")
    if outcome.state == "activated" and outcome.run is not None:
        _log_activation(outcome.run, outcome.request, outcome.before)
    return {"run_id": run_id, "state": outcome.state, "reason": outcome.reason}


def _log_activation(run: TrainingRun, request: dict[str, Any], before: int | None) -> None:
    # The admin's LogEntry, as when the activation ran inside the admin's request: the run's history says who did it.
    from django.apps import apps

    if not request.get("user_id") or not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.models import CHANGE, LogEntry

    was = f"run #{before}" if before is not None else "no model"
    note = request.get("note") or "Made this run's model serve"
    LogEntry.objects.log_actions(
        user_id=request["user_id"],
        queryset=[run],
        action_flag=CHANGE,
        change_message=f"{note} (before: {was}).",
        single_object=True,
    )


def enqueue_activation(run_id: int, token: str) -> None:
    """Send staff's activation request `token` for run `run_id` to the training queue once the transaction commits."""
    transaction.on_commit(lambda: _send(activate_model, args=[run_id], task_id=token), robust=True)


@shared_task(bind=True, name="recommendations.tasks.precompute", **REDELIVERED)
def precompute(self: Any, run_id: int | None = None) -> dict[str, Any] | None:
    """Run precompute `run_id` (a fresh run when None, as the beat schedule sends it).

    Redelivery of a finished run, or of one alive in another worker, does nothing, so acks_late retries are safe;
    a run whose worker was lost is taken over, its half-written set deleted (training.liveness).
    """
    from recommendations.lists.precompute import run_precompute

    shards = 1 if runs_inline() else int(rec_settings.PRECOMPUTE_SHARDS)
    try:
        run = run_precompute(run_id, task_id=self.request.id or "", shards=shards)
    except PrecomputeRun.DoesNotExist:
        logger.warning("precompute run #%s does not exist (deleted, or a message from another database)", run_id)
        return None
    attempt = getattr(run, "shards_to_send", None)
    if attempt is not None:
        n = len(run.stats["shard_plan"]["bounds"])
        chord(precompute_shard.si(run.pk, i, attempt) for i in range(n))(finish_precompute.si(run.pk, attempt))
    return {"run_id": run.pk, "status": run.status, "set_id": run.recommendation_set_id}


@shared_task(bind=True, name="recommendations.tasks.precompute_shard", **REDELIVERED)
def precompute_shard(self: Any, run_id: int, shard: int, attempt: int | None = None) -> dict[str, Any]:
    """One shard of a precompute's for_you stage (see lists.precompute.run_shard); `attempt` planned it."""
    from recommendations.lists.precompute import run_shard

    return run_shard(run_id, shard, worker=self.request.hostname or "", attempt=attempt)


@shared_task(name="recommendations.tasks.finish_precompute", **REDELIVERED)
def finish_precompute(run_id: int, attempt: int | None = None) -> dict[str, Any]:
    """After the last shard: activate the set the shards wrote (unless `attempt` was taken over since)."""
    from recommendations.lists.precompute import finish_sharded

    run = finish_sharded(run_id, attempt)
    return {"run_id": run.pk, "status": run.status, "set_id": run.recommendation_set_id}


@shared_task(name="recommendations.tasks.recover_runs", ignore_result=True, **REDELIVERED)
def recover_runs() -> dict[str, list[int]]:
    """Every minute (beat): send the task of each precompute and retrain whose worker was lost once more, and of
    each run still pending after RUN_STALE_SECONDS (queued while the broker was down: its message never left).

    Lost: running, with a heartbeat older than RUN_STALE_SECONDS (or its process on this machine ended). The message
    claims the run when it arrives (training.liveness), so one that comes after another took the run over does
    nothing. Each expires after RUN_STALE_SECONDS, so they do not pile up while no worker is up: the next sweep
    sends a fresh one. This does not wait for the broker's visibility timeout, and covers a run whose own message
    was redelivered while it still looked alive and then dropped.
    """
    from recommendations.training import liveness

    expires = float(rec_settings.RUN_STALE_SECONDS)
    sent: dict[str, list[int]] = {"precompute": [], "retrain": []}
    for name, task, model in (("precompute", precompute, PrecomputeRun), ("retrain", retrain, TrainingRun)):
        for run in liveness.lost_runs(model):
            logger.warning(
                "%s run #%s lost its worker %s (last heartbeat %s); sending it again",
                name,
                run.pk,
                run.worker or "(unknown)",
                run.heartbeat_at,
            )
            _send(task, args=[run.pk], task_id=uuid.uuid4().hex, expires=expires)
            sent[name].append(run.pk)
        for run in liveness.unsent_runs(model):
            logger.warning("%s run #%s still pending since %s; sending it again", name, run.pk, run.created_at)
            _send(task, args=[run.pk], task_id=uuid.uuid4().hex, expires=expires)
            sent[name].append(run.pk)
    return sent


def enqueue_precompute() -> PrecomputeRun:
    """Record a pending run now and send the task once the surrounding transaction commits."""
    task_id = uuid.uuid4().hex
    run = PrecomputeRun.objects.create(status=PrecomputeRun.Status.PENDING, task_id=task_id)
    # robust: a broker hiccup is logged, never turned into an error page; the run then stays visibly pending.
    transaction.on_commit(lambda: _send(precompute, args=[run.pk], task_id=task_id), robust=True)
    return run


# Without a broker the refresh runs inside the request: a page's own events touch one shopper, and a bulk
# server-side batch beyond this many shoppers waits for the next precompute instead of slowing the request.
EAGER_REFRESH_MAX_SHOPPERS = 3


@shared_task(name="recommendations.tasks.refresh_shoppers", ignore_result=True, **REDELIVERED)
def refresh_shoppers(shoppers: list[str]) -> int:
    """Rewrite these shoppers' for_you lists from their newest events (see lists.refresh)."""
    from recommendations.lists.refresh import refresh_shoppers as refresh

    return refresh(shoppers)


@shared_task(name="recommendations.tasks.refresh_shopper", ignore_result=True, **REDELIVERED)
def refresh_shopper(shopper: str) -> int | None:
    """Rewrite one shopper's for_you list now (for back ends that know a shopper just did something big)."""
    from recommendations.lists.refresh import refresh_shopper as refresh

    return refresh(shopper)


def schedule_refresh(shoppers: Iterable[str]) -> None:
    """Refresh shoppers' lists soon after their events commit, each at most once per debounce window.

    With a broker: one task per call for the shoppers not already waiting; events inside a window ride on the task
    already scheduled, which runs after the window closes and reads every event committed by then. Two cache
    round trips and one message per call, whatever the batch size, so ingest stays fast.
    Inline (no broker, see task_mode): a small batch refreshes in-process once the request's transaction commits.
    Neither a cache nor a broker that cannot be reached fails or stalls the caller: see `_publish_refresh`.
    """
    shoppers = [s for s in dict.fromkeys(shoppers) if s]
    if not shoppers or not rec_settings.REALTIME_REFRESH:
        return
    if runs_inline():
        if len(shoppers) <= EAGER_REFRESH_MAX_SHOPPERS:
            transaction.on_commit(lambda: _refresh_quietly(shoppers), robust=True)
        return
    window = float(rec_settings.REFRESH_DEBOUNCE_SECONDS)
    keys = {refresh_key(s): s for s in shoppers}
    # Not atomic: two racing requests may both schedule a shopper, which costs one spare refresh, nothing more.
    # Without the cache every shopper is due: a spare refresh is cheaper than a lost one.
    waiting = _debounce(lambda: cache.get_many(list(keys)), {})
    due = {key: shopper for key, shopper in keys.items() if key not in waiting}
    if not due:
        return
    _debounce(lambda: cache.set_many(dict.fromkeys(due, 1), timeout=max(1, int(window))), None)
    transaction.on_commit(lambda: _publish_refresh(list(due.values()), window + 0.5, list(due)), robust=True)


# A broker that cannot be reached is skipped for this long after a failure: a refresh it would have carried is
# covered by the next precompute, which rewrites every shopper's list, so nothing is lost but a few minutes of
# freshness, and a hung broker costs a web process one slow publish per interval instead of one per event batch.
BROKER_BREAKER_SECONDS = 30.0
BROKER = breaker.named("Celery broker (shopper refreshes)", BROKER_BREAKER_SECONDS)
DEBOUNCE = breaker.named("refresh debounce keys (the shared cache)")
# One immediate retry: enough for a pooled connection the broker closed while restarting, never a wait that a dead
# broker turns into seconds per event batch (Celery's default policy retries three times, ~0.6 s when refused).
REFRESH_PUBLISH_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}


def _debounce(read_or_write: Any, degraded: Any) -> Any:
    """A debounce-key call to the shared cache, or `degraded` when the cache cannot be reached (breaker open)."""
    if not DEBOUNCE.allow():
        return degraded
    try:
        result = read_or_write()
    except Exception as exc:  # whatever the cache backend raises when it cannot be reached
        DEBOUNCE.failed(exc)
        return degraded
    DEBOUNCE.succeeded()
    return result


def _publish_refresh(shoppers: list[str], countdown: float, debounce_keys: list[str]) -> None:
    """Send one refresh task; when the broker cannot take it, log once and leave these shoppers to the next precompute.

    Event ingest must need only the database: a broker that is down (refused at once) or hung (until the socket
    timeout in CELERY_BROKER_TRANSPORT_OPTIONS) neither fails nor stalls each batch, thanks to the breaker.
    """
    if not BROKER.allow():
        logger.debug("broker skipped; %d shoppers' lists are refreshed by the next precompute", len(shoppers))
        return
    try:
        _send(refresh_shoppers, args=[shoppers], countdown=countdown, retry=True, retry_policy=REFRESH_PUBLISH_POLICY)
    except Exception as exc:  # kombu's OperationalError, a socket timeout, ...: the broker did not take it
        BROKER.failed(exc)
        logger.warning(
            "could not schedule the refresh of %d shoppers' lists; the next precompute refreshes them", len(shoppers)
        )
        # Their debounce keys would make the next events within the window ride on a task that was never sent.
        _debounce(lambda: cache.delete_many(debounce_keys), None)
        return
    BROKER.succeeded()


def _refresh_quietly(shoppers: list[str]) -> None:
    # In-process refresh must never turn a page view into an error page. On SQLite a click's write can collide with
    # the next page's ("database is locked"): that refresh is tried once more instead of being lost.
    for attempt in (1, 2):
        try:
            refresh_shoppers(shoppers)
            return
        except OperationalError as exc:
            if attempt == 1 and "database is locked" in str(exc):
                continue
            logger.exception("refresh of %s failed", shoppers)
        except Exception:
            logger.exception("refresh of %s failed", shoppers)
        return


@shared_task(name="recommendations.tasks.refresh_analytics", ignore_result=True, **REDELIVERED)
def refresh_analytics(start: str | None = None, end: str | None = None) -> int:
    """Rebuild the daily analytics of days `start`..`end` (ISO dates; yesterday and today when left out)."""
    from recommendations.analytics import rebuild_recent

    return rebuild_recent(start, end)


def enqueue_analytics_refresh(start: str, end: str) -> None:
    """Send an analytics rebuild of these days once the surrounding transaction commits."""
    transaction.on_commit(lambda: _send(refresh_analytics, kwargs={"start": start, "end": end}), robust=True)


@shared_task(name="recommendations.tasks.apply_retention", **REDELIVERED)
def apply_retention() -> dict[str, int]:
    """Delete events past the retention window (daily, from beat); a no-op while retention is off."""
    from recommendations.retention import apply_retention as apply

    return apply()


@shared_task(name="recommendations.tasks.send_due_messages", **REDELIVERED)
def send_due_messages(flow: str | None = None) -> dict[str, Any]:
    """Send every enabled flow's due e-mails (hourly, from beat), or flow `flow`'s (a slug); each at most once, so a
    redelivered or overlapping run sends nothing twice (push.sending)."""
    from recommendations.push.sending import NotConfigured
    from recommendations.push.sending import send_due_messages as send

    try:
        return send(flow)
    except NotConfigured as exc:
        logger.error("push e-mails not sent: %s", exc)
        return {"error": str(exc)}


def enqueue_send_due_messages(flow: str | None = None) -> None:
    """Send the flows' due e-mails through the broker once the surrounding transaction commits (see task_mode)."""
    transaction.on_commit(lambda: _send(send_due_messages, kwargs={"flow": flow}), robust=True)
