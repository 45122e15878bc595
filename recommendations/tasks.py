"""Celery tasks: thin, idempotent, ids in; each is one call into the engine.

`retrain` is the only task that imports TensorFlow (inside the neural model's fit): it goes to its own queue,
TRAINING_QUEUE, served by a worker started with `-Q recommendations-training --pool solo` (or
`--max-tasks-per-child 1`), so a TensorFlow-using process never forks. Everything else, precompute and refresh
included, scores with numpy and runs on the default queue.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from celery import chord, current_app, shared_task
from django.core.cache import cache
from django.db import transaction

from recommendations.conf import rec_settings
from recommendations.models import PrecomputeRun, TrainingRun

logger = logging.getLogger(__name__)

TRAINING_QUEUE = "recommendations-training"


@shared_task(bind=True, name="recommendations.tasks.retrain", queue=TRAINING_QUEUE)
def retrain(self: Any, run_id: int | None = None) -> dict[str, Any] | None:
    """Retrain (run `run_id`, or a fresh run from the beat schedule); single-flight, so a second one skips.

    A redelivered message for a finished run does nothing; one for a run whose worker died starts it over.
    """
    from recommendations.engine.training import TrainingError, run_training

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
    transaction.on_commit(lambda: retrain.apply_async(args=[run.pk], task_id=task_id), robust=True)
    return run


@shared_task(bind=True, name="recommendations.tasks.precompute")
def precompute(self: Any, run_id: int | None = None) -> dict[str, Any] | None:
    """Run precompute `run_id` (a fresh run when None, as the beat schedule sends it).

    Redelivery of a finished run does nothing, so acks_late retries are safe.
    """
    from recommendations.engine.precompute import run_precompute

    shards = 1 if current_app.conf.task_always_eager else int(rec_settings.PRECOMPUTE_SHARDS)
    try:
        run = run_precompute(run_id, task_id=self.request.id or "", shards=shards)
    except PrecomputeRun.DoesNotExist:
        logger.warning("precompute run #%s does not exist (deleted, or a message from another database)", run_id)
        return None
    if run.status == PrecomputeRun.Status.RUNNING and "shard_plan" in run.stats:
        n = len(run.stats["shard_plan"]["bounds"])
        chord(precompute_shard.si(run.pk, i) for i in range(n))(finish_precompute.si(run.pk))
    return {"run_id": run.pk, "status": run.status, "set_id": run.recommendation_set_id}


@shared_task(bind=True, name="recommendations.tasks.precompute_shard")
def precompute_shard(self: Any, run_id: int, shard: int) -> dict[str, Any]:
    """One shard of a precompute's for_you stage (see engine.precompute.run_shard)."""
    from recommendations.engine.precompute import run_shard

    return run_shard(run_id, shard, worker=self.request.hostname or "")


@shared_task(name="recommendations.tasks.finish_precompute")
def finish_precompute(run_id: int) -> dict[str, Any]:
    """After the last shard: activate the set the shards wrote."""
    from recommendations.engine.precompute import finish_sharded

    run = finish_sharded(run_id)
    return {"run_id": run.pk, "status": run.status, "set_id": run.recommendation_set_id}


def enqueue_precompute() -> PrecomputeRun:
    """Record a pending run now and send the task once the surrounding transaction commits."""
    task_id = uuid.uuid4().hex
    run = PrecomputeRun.objects.create(status=PrecomputeRun.Status.PENDING, task_id=task_id)
    # robust: a broker hiccup is logged, never turned into an error page; the run then stays visibly pending.
    transaction.on_commit(lambda: precompute.apply_async(args=[run.pk], task_id=task_id), robust=True)
    return run


# Without a broker the refresh runs inside the request: a page's own events touch one shopper, and a bulk
# server-side batch beyond this many shoppers waits for the next precompute instead of slowing the request.
EAGER_REFRESH_MAX_SHOPPERS = 3


@shared_task(name="recommendations.tasks.refresh_shoppers", ignore_result=True)
def refresh_shoppers(shoppers: list[str]) -> int:
    """Rewrite these shoppers' for_you lists from their newest events (see engine.refresh)."""
    from recommendations.engine.refresh import refresh_shopper

    return sum(1 for shopper in shoppers if refresh_shopper(shopper) is not None)


@shared_task(name="recommendations.tasks.refresh_shopper", ignore_result=True)
def refresh_shopper(shopper: str) -> int | None:
    """Rewrite one shopper's for_you list now (for back ends that know a shopper just did something big)."""
    from recommendations.engine.refresh import refresh_shopper as refresh

    return refresh(shopper)


def schedule_refresh(shoppers: Iterable[str]) -> None:
    """Refresh shoppers' lists soon after their events commit, each at most once per debounce window.

    With a broker: one task per call for the shoppers not already waiting; events inside a window ride on the task
    already scheduled, which runs after the window closes and reads every event committed by then. Two cache
    round trips and one message per call, whatever the batch size, so ingest stays fast.
    Run eagerly (the demo): a small batch refreshes at once, in-process.
    """
    shoppers = [s for s in dict.fromkeys(shoppers) if s]
    if not shoppers or not rec_settings.REALTIME_REFRESH:
        return
    if current_app.conf.task_always_eager:
        if len(shoppers) <= EAGER_REFRESH_MAX_SHOPPERS:
            transaction.on_commit(lambda: _refresh_quietly(shoppers), robust=True)
        return
    window = float(rec_settings.REFRESH_DEBOUNCE_SECONDS)
    keys = {f"recommendations:refresh:{s}": s for s in shoppers}
    # Not atomic: two racing requests may both schedule a shopper, which costs one spare refresh, nothing more.
    waiting = cache.get_many(list(keys))
    due = {key: shopper for key, shopper in keys.items() if key not in waiting}
    if not due:
        return
    cache.set_many(dict.fromkeys(due, 1), timeout=max(1, int(window)))
    transaction.on_commit(
        lambda: refresh_shoppers.apply_async(args=[list(due.values())], countdown=window + 0.5), robust=True
    )


def _refresh_quietly(shoppers: list[str]) -> None:
    # In-process refresh must never turn a page view into an error page.
    try:
        refresh_shoppers.apply(args=[shoppers])
    except Exception:
        logger.exception("refresh of %s failed", shoppers)


@shared_task(name="recommendations.tasks.refresh_analytics", ignore_result=True)
def refresh_analytics(start: str | None = None, end: str | None = None) -> int:
    """Rebuild the daily analytics of days `start`..`end` (ISO dates; yesterday and today when left out)."""
    from recommendations.analytics import rebuild_recent

    return rebuild_recent(start, end)


def enqueue_analytics_refresh(start: str, end: str) -> None:
    """Send an analytics rebuild of these days once the surrounding transaction commits."""
    transaction.on_commit(lambda: refresh_analytics.apply_async(kwargs={"start": start, "end": end}), robust=True)
