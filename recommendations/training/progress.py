"""Stage-by-stage progress of a long run (precompute, training), told to a callback and saved to its row.

The row's `progress` (0..1) and `stage` are what staff watch in the admin; saving at most once a second keeps
a fast inner loop from turning into a stream of UPDATEs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db import models
from django.utils import timezone

from recommendations.training import liveness

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
PROGRESS_SAVE_SECONDS = 1.0


class RunProgress:
    """Tracks the current stage of `run` (a model with progress/stage fields) given each stage's share of the bar."""

    def __init__(
        self,
        run: models.Model,
        callback: ProgressCallback | None,
        stages: dict[str, float],
        attempt: int | None = None,
    ) -> None:
        self.run = run
        # The attempt that owns the run (training.liveness): its saves are fenced, and one that finds the run taken
        # over raises RunLost, so a worker that lost its run stops at its next step.
        self.attempt = attempt
        self.callback = callback
        self.stages = stages
        self.stage = ""
        self.total = 1
        self.done = 0
        self.completed_share = 0.0
        self.stage_started = time.monotonic()
        self.seconds: dict[str, float] = {}
        self.last_save = 0.0
        self.has_heartbeat = any(f.name == "heartbeat_at" for f in type(run)._meta.get_fields())

    def start(self, stage: str, total: int = 1) -> None:
        self.finish()
        self.stage, self.total, self.done = stage, max(int(total), 1), 0
        self.stage_started = time.monotonic()
        self._report(force=True)

    def advance(self, amount: int = 1) -> None:
        self.done = min(self.done + int(amount), self.total)
        self._report()

    def update(self, stage: str, done: int, total: int) -> None:
        """Callback form, for code that reports (stage, done, total) itself; stages must be known."""
        if stage != self.stage:
            self.start(stage, total)
        self.total = max(int(total), 1)
        self.done = min(int(done), self.total)
        self._report()

    def finish(self) -> None:
        if not self.stage:
            return
        self.done = self.total
        self._report(force=True)
        self.seconds[self.stage] = round(self.seconds.get(self.stage, 0.0) + time.monotonic() - self.stage_started, 3)
        self.completed_share += self.stages.get(self.stage, 0.0)
        self.stage = ""

    @property
    def fraction(self) -> float:
        current = self.stages.get(self.stage, 0.0) * self.done / self.total if self.stage else 0.0
        return min(1.0, self.completed_share + current)

    def _report(self, force: bool = False) -> None:
        if self.callback is not None:
            self.callback(self.stage, self.done, self.total)
        now = time.monotonic()
        if force or now - self.last_save >= PROGRESS_SAVE_SECONDS:
            self.last_save = now
            fields: dict[str, Any] = {"progress": round(self.fraction, 4), "stage": self.stage}
            if self.has_heartbeat:
                fields["heartbeat_at"] = timezone.now()
            if self.attempt is None:
                type(self.run).objects.filter(pk=self.run.pk).update(**fields)
            else:
                liveness.fenced_update(type(self.run), self.run.pk, self.attempt, **fields)
