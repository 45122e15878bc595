"""Who sees which arm of a running experiment: the running variants, cached, and deterministic bucketing.

Kept apart from the operations and the report (`experiments.operations`, `experiments.report`) because the lists
layer needs it too: precompute and refresh write an arm's own lists for that arm's shoppers. It reads rows and the
cache, nothing above them.
Bucketing needs no storage: a shopper's point is sha256(salt + shopper key) read as a number in [0, 1), and the arm
is the variant whose cumulative (normalised) share covers it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache

from recommendations import keys
from recommendations.models import Experiment, ExperimentVariant

CACHE_KEY = keys.EXPERIMENTS_RUNNING
CACHE_TTL = 300  # seconds; saves and deletes flush at once, the TTL only bounds other processes' stale reads


def stamp_of(experiment_id: int, name: str) -> str:
    """What goes into Event.variant for an arm."""
    return f"{experiment_id}:{name}"


@dataclass(frozen=True)
class Arm:
    """What serving needs to serve one variant."""

    experiment_id: int
    name: str
    strategy: str  # an ExperimentVariant.Strategy value: model, model_version, trending, popular, newest
    training_run_id: int | None

    @property
    def stamp(self) -> str:
        return stamp_of(self.experiment_id, self.name)


# -- bucketing ---------------------------------------------------------------------------------------------------


def running() -> dict[str, list[dict[str, Any]]]:
    """{placement: its running experiment's variants}, cached for everyone."""
    rows = cache.get(CACHE_KEY)
    if rows is None:
        rows = {}
        running = Experiment.objects.filter(status=Experiment.Status.RUNNING)
        variants = (
            ExperimentVariant.objects.filter(experiment__in=running, share__gt=0)
            .order_by("experiment__started_at", "experiment_id", "pk")
            .values(
                "experiment_id",
                "experiment__placement",
                "experiment__salt",
                "name",
                "share",
                "strategy",
                "training_run_id",
            )
        )
        by_experiment: dict[int, list[dict[str, Any]]] = {}
        for row in variants:
            by_experiment.setdefault(row["experiment_id"], []).append(row)
        for experiment_id, arms in by_experiment.items():
            placement = arms[0]["experiment__placement"]
            if placement in rows:  # at most one runs per placement (Start refuses a second); the older one wins
                continue
            total = sum(float(a["share"]) for a in arms)
            upper = 0.0
            rows[placement] = []
            for arm in arms:
                share = float(arm["share"]) / total
                upper += share
                rows[placement].append(
                    {
                        "experiment_id": experiment_id,
                        "salt": arm["experiment__salt"],
                        "name": arm["name"],
                        "strategy": arm["strategy"],
                        "training_run_id": arm["training_run_id"],
                        "share": share,
                        "upper": upper,
                    }
                )
            rows[placement][-1]["upper"] = 1.0  # rounding must not leave a sliver of [0, 1) unassigned
        cache.set(CACHE_KEY, rows, CACHE_TTL)
    return rows


def running_for(placement: str) -> list[dict[str, Any]] | None:
    """The running experiment of a placement as its variants, in order (the first is the control), or None.

    Each variant is {"experiment_id", "salt", "name", "strategy", "training_run_id", "share", "upper"}: `share` is
    normalised over the variants, `upper` is the cumulative share up to and including it (the last one is 1.0).
    """
    return running().get(placement) or None


def bucket_point(salt: str, shopper: str) -> float:
    """A shopper's point in [0, 1): the first 8 bytes of sha256(salt + shopper) over 2**64."""
    digest = hashlib.sha256((salt + shopper).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(placement: str, shopper: str) -> Arm | None:
    """The arm this shopper sees in this placement, or None when no experiment runs there or the shopper is unknown."""
    if not shopper:
        return None
    return arm_for(running_for(placement), shopper)


def arm_for(variants: list[dict[str, Any]] | None, shopper: str) -> Arm | None:
    """`assign` over variants already read (serving reads them with the rules bundle)."""
    if not variants or not shopper:
        return None
    point = bucket_point(variants[0]["salt"], shopper)
    chosen = next((v for v in variants if point < v["upper"]), variants[-1])
    return Arm(chosen["experiment_id"], chosen["name"], chosen["strategy"], chosen["training_run_id"])


def forget() -> None:
    """Drop the cached running variants (a save or delete of an experiment or a variant calls it)."""
    cache.delete(CACHE_KEY)
