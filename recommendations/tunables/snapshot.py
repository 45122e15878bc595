"""The snapshot serving reads: every tunable (placement rows, cold-start and merchandising rules, running experiments)
as of one version stamp, a placement's configuration as of a bundle, and the flush that moves the version whenever
a row is saved or deleted (the receivers below), so every process and every cached block sees the change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from recommendations import keys
from recommendations.conf import rec_settings
from recommendations.experiments import assignment
from recommendations.holds import Hold
from recommendations.models import (
    ColdStartRule,
    MerchandisingRule,
)
from recommendations.models import Placement as PlacementRow
from recommendations.tunables.placements import PLACEMENTS_KEY, Placement, UnknownPlacement, placement_rows
from recommendations.tunables.rules import COLD_START_KEY, MERCHANDISING_KEY, cold_start_rows, merchandising_rows

VERSION_KEY = keys.RULES_VERSION


@dataclass
class Bundle:
    """Every tunable serving reads, as of one version stamp: placements, cold-start and merchandising rules, and the
    running experiments."""

    version: str
    placements: dict[str, dict[str, Any]]
    cold_start: list[dict[str, Any]]
    merchandising: list[dict[str, Any]]
    experiments: dict[str, list[dict[str, Any]]]


BUNDLE_HOLD: Hold[str, Bundle] = Hold("rules bundle", 1, owner=__name__)
"""The last bundle this process read (one entry, "bundle"); `bundle` reads the rows again when the version moved."""


def version_from(value: Any) -> str:
    return str(value or "0")


def bundle(version: str) -> Bundle:
    """The tunables at `version` (read with the block cache, in the same round trip). A process keeps the last bundle
    and reads the rows again only when the version moved, so a rule saved in the admin shows on the next page in every
    process, and an unchanged one costs no cache read at all."""
    held = BUNDLE_HOLD.get("bundle")
    if held is not None and held.version == version:
        return held
    fresh = Bundle(
        version=version,
        placements=placement_rows(),
        cold_start=cold_start_rows(),
        merchandising=merchandising_rows(),
        experiments=assignment.running(),
    )
    BUNDLE_HOLD.put("bundle", fresh)
    return fresh


def current_bundle() -> Bundle:
    return bundle(version_from(cache.get(VERSION_KEY)))


def placement_config(name: str, tunables: Bundle | None = None) -> Placement:
    configured = rec_settings.PLACEMENTS
    if name not in configured:
        raise UnknownPlacement(name)
    raw = {**configured[name]}
    row = (tunables or current_bundle()).placements.get(name)
    if row is not None:
        raw.update({key: value for key, value in row.items() if key != "title" or value})
    title = rec_settings.TITLES.get(name) if row is None or not row.get("title") else row["title"]
    return Placement(
        name=name,
        title=str(title or raw.get("title", "")),
        size=int(raw.get("size", rec_settings.BLOCK_SIZE)),
        allow_bought=bool(raw.get("allow_bought", False)),
        max_per_category=int(raw.get("max_per_category", 0) or 0),
        max_per_brand=int(raw.get("max_per_brand", 0) or 0),
        fallback=tuple(raw.get("fallback", ())),
        enabled=bool(raw.get("enabled", True)),
        strategy=str(raw.get("strategy") or "model"),
        exploration_share=float(raw.get("exploration_share") or 0.0),
        exploration_max_age_days=int(raw.get("exploration_max_age_days") or 14),
        min_size=int(raw.get("min_size") or 1),
    )


def flush() -> None:
    """Forget the cached rows and move the version, so every process and every cached block sees the change."""
    import time

    cache.delete_many([PLACEMENTS_KEY, COLD_START_KEY, MERCHANDISING_KEY])
    cache.set(VERSION_KEY, str(time.time_ns()), None)
    BUNDLE_HOLD.discard("bundle")


@receiver(post_save, sender=PlacementRow)
@receiver(post_delete, sender=PlacementRow)
@receiver(post_save, sender=ColdStartRule)
@receiver(post_delete, sender=ColdStartRule)
@receiver(post_save, sender=MerchandisingRule)
@receiver(post_delete, sender=MerchandisingRule)
def _flush_on_change(sender: Any, **kwargs: Any) -> None:
    # Now, and again after commit: a reader between the two would otherwise cache the old rows.
    from django.db import transaction

    flush()
    transaction.on_commit(flush)
