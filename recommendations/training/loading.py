"""Event rows and product profiles read from the database into the engine's arrays (`engine.dataset`).

The engine never touches the ORM: these loaders stream rows out of PostgreSQL (a server-side cursor, so memory stays
flat) and hand them to `engine.dataset.event_log_from_rows`. Rows whose time Python cannot read are left out here, in
SQL, and counted, so one bad row costs itself, not a training or a precompute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.crypto import salted_hmac

from recommendations.conf import rec_settings
from recommendations.engine.dataset import LOAD_CHUNK, EventLog, ProfileRow, event_log_from_rows, loaded_event_types
from recommendations.models import Event, ProductProfile

# PostgreSQL keeps times from 4713 BC; Python reads years 1 to 9999 only, and the driver fails the whole fetch on one
# row outside them ("year -1 is out of range"). The ingest API refuses such times now, but a row stored before it did
# (or written by raw SQL) must not stop every training and precompute: readers leave those rows out in SQL and count
# them. A day inside each end, so no session time zone can push a kept row over the edge.
READABLE_FROM = datetime(1, 1, 2, tzinfo=UTC)
READABLE_UNTIL = datetime(9999, 12, 30, tzinfo=UTC)


def readable(events: Any) -> Any:
    """`events` (an Event queryset) without the rows whose occurred_at Python cannot read."""
    return events.filter(occurred_at__gte=READABLE_FROM, occurred_at__lte=READABLE_UNTIL)


def unreadable(events: Any) -> Any:
    """The rows of `events` that `readable` leaves out (two index range scans on occurred_at)."""
    return events.filter(Q(occurred_at__lt=READABLE_FROM) | Q(occurred_at__gt=READABLE_UNTIL))


PSEUDONYM_SALT = "recommendations.training.pseudonym"


def pseudonym(shopper: str) -> str:
    """The keyed hash training knows a shopper by: HMAC-SHA256 under PSEUDONYM_KEY (default: SECRET_KEY).

    Training needs to tell shoppers apart, never who they are: what it reads, holds in memory and could leave in an
    artefact or a log is this. Stable while the key is, so runs agree; unlinkable to a shopper without the key.
    Precompute reads raw ids, since it writes each shopper's list.
    """
    key = rec_settings.PSEUDONYM_KEY or None  # None: salted_hmac takes SECRET_KEY
    return "p:" + salted_hmac(PSEUDONYM_SALT, shopper, secret=key, algorithm="sha256").hexdigest()[:32]


def load_event_log(
    item_ids: Sequence[str],
    weights: dict[str, float],
    on_row_chunk: Callable[[int], None] | None = None,
    shopper_range: tuple[str, str | None] | None = None,
    pseudonymise: bool = False,
) -> EventLog:
    """Stream the training events out of the database (a server-side cursor, so memory stays flat).

    `shopper_range` (low inclusive, high exclusive or None for no end) limits it to one shard's shoppers;
    `pseudonymise` replaces each shopper id by its `pseudonym` as rows are read (training does).
    """
    qs = readable(training_events(weights))
    if shopper_range is not None:
        low, high = shopper_range
        qs = qs.filter(shopper__gte=low)
        if high is not None:
            qs = qs.filter(shopper__lt=high)
    rows = qs.values_list("shopper", "product_id", "event_type", "occurred_at").iterator(chunk_size=LOAD_CHUNK)
    if pseudonymise:
        rows = _pseudonymised(rows)
    return event_log_from_rows(rows, item_ids, weights, on_row_chunk)


def _pseudonymised(rows: Any) -> Any:
    """The rows with each shopper id hashed once (a shopper's events share one HMAC)."""
    known: dict[str, str] = {}
    for shopper, product_id, event_type, occurred_at in rows:
        hashed = known.get(shopper)
        if hashed is None:
            hashed = known[shopper] = pseudonym(shopper) if shopper else shopper
        yield hashed, product_id, event_type, occurred_at


def training_events(weights: dict[str, float]) -> QuerySet[Event]:
    """Every Event row training and precompute read (product events of known shoppers), readable or not."""
    return Event.objects.filter(event_type__in=loaded_event_types(weights)).exclude(product_id="").exclude(shopper="")


def count_training_events(weights: dict[str, float]) -> int:
    """How many rows `load_event_log` will read, for an honest progress bar."""
    return readable(training_events(weights)).count()


def count_unreadable_events(weights: dict[str, float]) -> int:
    """How many rows `load_event_log` leaves out because their time cannot be read (see READABLE_FROM)."""
    return unreadable(training_events(weights)).count()


def load_profile_rows() -> list[ProfileRow]:
    """Every product profile, in product id order (the engine's item order)."""
    return list(
        ProductProfile.objects.order_by("product_id").values_list(
            "product_id", "name", "category", "brand", "price", "text", "created_at"
        )
    )


def shard_bounds(weights: dict[str, float], shards: int) -> list[tuple[str, str | None]]:
    """Split the shoppers with training events into `shards` contiguous key ranges of about equal size."""
    keys = list(readable(training_events(weights)).order_by("shopper").values_list("shopper", flat=True).distinct())
    if not keys:
        return [("", None)]
    shards = max(1, min(shards, len(keys)))
    starts = [keys[i * len(keys) // shards] for i in range(shards)]
    starts[0] = ""
    return [(low, starts[i + 1] if i + 1 < shards else None) for i, low in enumerate(starts)]
