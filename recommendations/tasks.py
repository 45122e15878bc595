"""Celery tasks: thin, idempotent, ids in; each is one call into the engine.

These tasks need no TensorFlow and go to the default queue; TensorFlow training gets its own queue later.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from celery import current_app, shared_task
from django.core.cache import cache
from django.db import transaction

from recommendations.conf import rec_settings
from recommendations.models import PrecomputeRun

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="recommendations.tasks.precompute")
def precompute(self: Any, run_id: int | None = None) -> dict[str, Any] | None:
    """Run precompute `run_id` (a fresh run when None, as the beat schedule sends it).

    Redelivery of a finished run does nothing, so acks_late retries are safe.
    """
    from recommendations.engine.precompute import run_precompute

    try:
        run = run_precompute(run_id, task_id=self.request.id or "")
    except PrecomputeRun.DoesNotExist:
        logger.warning("precompute run #%s does not exist (deleted, or a message from another database)", run_id)
        return None
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
