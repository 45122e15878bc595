"""Placements, the surfaces a shop shows blocks on: the one `Placement` type rules, experiments and serving use,
and the admin's rows that override conf.PLACEMENTS field by field (read through one cache key, flushed on save)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.cache import cache

from recommendations import keys
from recommendations.conf import rec_settings
from recommendations.models import Placement as PlacementRow

CACHE_TTL = 300  # seconds; saves and deletes flush at once, the TTL only bounds other processes' stale reads


PLACEMENTS_KEY = keys.RULES_PLACEMENTS


class UnknownPlacement(LookupError):
    """A placement name that is not configured."""


@dataclass(frozen=True)
class Placement:
    """How one surface behaves: conf.PLACEMENTS, overridden per field by its row in the admin (models.Placement)."""

    name: str
    title: str
    size: int
    allow_bought: bool
    max_per_category: int  # 0: no cap
    max_per_brand: int
    fallback: tuple[str, ...]
    enabled: bool = True
    strategy: str = "model"
    exploration_share: float = 0.0
    exploration_max_age_days: int = 14
    min_size: int = 1  # fewer items than this (or than the block's size, if smaller): the block is not shown


def placement_names() -> list[str]:
    return list(rec_settings.PLACEMENTS)


def placement_rows() -> dict[str, dict[str, Any]]:
    """{name: fields} of every Placement row, cached."""
    rows = cache.get(PLACEMENTS_KEY)
    if rows is None:
        rows = {
            row["name"]: row
            for row in PlacementRow.objects.values(
                "name",
                "title",
                "enabled",
                "size",
                "allow_bought",
                "max_per_category",
                "max_per_brand",
                "fallback",
                "strategy",
                "exploration_share",
                "exploration_max_age_days",
            )
        }
        cache.set(PLACEMENTS_KEY, rows, CACHE_TTL)
    return rows
