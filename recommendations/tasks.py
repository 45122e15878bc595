"""Celery tasks: thin, idempotent, ids in; each is one call into the engine.

These tasks need no TensorFlow and go to the default queue; TensorFlow training gets its own queue later.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import shared_task
from django.db import transaction

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
