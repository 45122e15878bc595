"""Celery tasks: thin, idempotent, ids in; each is one call into the engine.

These tasks need no TensorFlow and go to the default queue; TensorFlow training gets its own queue later.
"""

from __future__ import annotations

import logging
import uuid
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


@shared_task(name="recommendations.tasks.refresh_shopper", ignore_result=True)
def refresh_shopper(shopper: str) -> int | None:
    """Rewrite one shopper's for_you list from their newest events (see engine.refresh)."""
    from recommendations.engine.refresh import refresh_shopper as refresh

    return refresh(shopper)


def schedule_refresh(shopper: str) -> None:
    """Refresh a shopper's list soon after their events commit, at most once per debounce window.

    With a broker, events inside the window ride on the task already scheduled: it runs after the window closes
    and reads every event committed by then. Run eagerly (the demo), each event refreshes at once.
    """
    if not shopper or not rec_settings.REALTIME_REFRESH:
        return
    if current_app.conf.task_always_eager:
        transaction.on_commit(lambda: _refresh_quietly(shopper), robust=True)
        return
    window = float(rec_settings.REFRESH_DEBOUNCE_SECONDS)
    if not cache.add(f"recommendations:refresh:{shopper}", 1, timeout=max(1, int(window))):
        return
    transaction.on_commit(lambda: refresh_shopper.apply_async(args=[shopper], countdown=window + 0.5), robust=True)


def _refresh_quietly(shopper: str) -> None:
    # In-process refresh must never turn a page view into an error page.
    try:
        refresh_shopper.apply(args=[shopper])
    except Exception:
        logger.exception("refresh of %s failed", shopper)
