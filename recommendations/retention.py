"""Retention: events older than the shop's retention window are deleted, in batches, by a daily task and a command.

Storing the least is the default a data-protection officer expects: a shop names how long behaviour is kept
(RECOMMENDATIONS["EVENT_RETENTION_DAYS"]) and impressions, the bulkiest and least telling rows, may go sooner
(["IMPRESSION_RETENTION_DAYS"]). An event is expired when it happened (`occurred_at`) strictly before the cut-off;
one at the cut-off itself stays. Deletes run in primary-key batches, each its own short transaction, so a table of
millions of rows is never locked for long and an interrupted run simply continues the next time. The daily analytics
rows are counts without shoppers: they stay, and `analytics.rebuild_days` never recomputes a day whose events
retention has started to delete (it would turn kept counts into zeros).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from recommendations.conf import rec_settings
from recommendations.models import Event, EventType

logger = logging.getLogger(__name__)

BATCH = 5000


@dataclass(frozen=True)
class Cutoffs:
    """When rows become expired: events (every type but impressions) and impressions; None keeps them."""

    events: datetime | None
    impressions: datetime | None

    @property
    def active(self) -> bool:
        return self.events is not None or self.impressions is not None

    def expired(self) -> Q:
        """The rows to delete. Only meaningful when `active`."""
        query = Q(pk__in=[])
        if self.events is not None:
            query |= Q(occurred_at__lt=self.events) & ~Q(event_type=EventType.IMPRESSION)
        if self.impressions is not None:
            query |= Q(occurred_at__lt=self.impressions, event_type=EventType.IMPRESSION)
        return query


def cutoffs(now: datetime | None = None) -> Cutoffs:
    """The cut-offs the settings give at `now` (the server's clock by default)."""
    now = now or timezone.now()
    event_days = rec_settings.EVENT_RETENTION_DAYS
    impression_days = rec_settings.IMPRESSION_RETENTION_DAYS
    if impression_days is None or (event_days is not None and event_days < impression_days):
        impression_days = event_days  # an impression is an event too: never kept longer than the others
    return Cutoffs(
        events=None if event_days is None else now - timedelta(days=float(event_days)),
        impressions=None if impression_days is None else now - timedelta(days=float(impression_days)),
    )


def first_whole_day(now: datetime | None = None) -> date | None:
    """The first day whose events retention has not started to delete (None: retention is off).

    The earlier of the two cut-offs decides: a day before it may already have lost some rows.
    """
    limits = cutoffs(now)
    found = [c for c in (limits.events, limits.impressions) if c is not None]
    if not found:
        return None
    earliest = timezone.localtime(min(found), timezone.get_default_timezone())  # analytics' days
    return earliest.date() + timedelta(days=1)


def count_expired(now: datetime | None = None) -> int:
    """How many rows the next run would delete (0 when retention is off)."""
    limits = cutoffs(now)
    return Event.objects.filter(limits.expired()).count() if limits.active else 0


def apply_retention(
    now: datetime | None = None, batch: int = BATCH, on_batch: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Delete every expired event, `batch` rows per transaction; returns the counts by kind.

    `on_batch(n)` is called after each batch (a progress bar). Bounded: each pass deletes what existed at the start
    of the run, so rows arriving meanwhile (newer than the cut-off) can never keep it looping.
    """
    limits = cutoffs(now)
    counts = {"events": 0, "impressions": 0}
    if not limits.active:
        return counts
    expired = Event.objects.filter(limits.expired())
    last = expired.order_by("-pk").values_list("pk", flat=True).first()
    if last is None:
        return counts
    while True:
        ids = list(expired.filter(pk__lte=last).order_by("pk").values_list("pk", flat=True)[:batch])
        if not ids:
            break
        with transaction.atomic():
            impressions = Event.objects.filter(pk__in=ids, event_type=EventType.IMPRESSION).count()
            deleted, _ = Event.objects.filter(pk__in=ids).delete()
        counts["impressions"] += impressions
        counts["events"] += deleted - impressions
        if on_batch is not None:
            on_batch(deleted)
    if counts["events"] or counts["impressions"]:
        logger.info(
            "retention: deleted %d events before %s and %d impressions before %s",
            counts["events"],
            limits.events.isoformat() if limits.events else "-",
            counts["impressions"],
            limits.impressions.isoformat() if limits.impressions else "-",
        )
    return counts
