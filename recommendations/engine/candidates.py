"""Which recommenders exist, by name: the recipes a training run may fit (the CANDIDATES setting picks some).

Classes are looked up lazily by name so the settings check (run in every web process) can validate names
without importing scipy-heavy code; an artefact's params.json names its class, which is how `load` finds it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from recommendations.engine.base import Recommender

# Recommender class name (as written in params.json) -> "module:Class".
RECOMMENDER_PATHS: dict[str, str] = {
    "popularity": "recommendations.engine.baselines:Popularity",
    "item_knn": "recommendations.engine.baselines:ItemKNN",
    "ease": "recommendations.engine.baselines:EASE",
    "ease_lowrank": "recommendations.engine.lowrank:LowRankEASE",
    "content": "recommendations.engine.content:ContentAffinity",
    "neural": "recommendations.engine.neural:NeuralRecommender",
    "sequence": "recommendations.engine.sequence:SequenceRecommender",
    "blend": "recommendations.engine.blend:Blend",
    "cold_slot": "recommendations.engine.coldslot:ColdSlot",
}

# Candidate name (the CANDIDATES setting) -> (recommender class name, parameters). "recency" in a parameter value
# is replaced by RECENCY_HALF_LIFE_DAYS at fit time; "neural" also takes the NEURAL setting's parameters.
CANDIDATE_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "popularity": ("popularity", {}),
    "trending": ("popularity", {"half_life_days": 7.0}),
    "item_knn": ("item_knn", {"history_half_life_days": "recency"}),
    "ease": ("ease", {}),
    "ease_recency": ("ease", {"history_half_life_days": "recency"}),
    "ease_lowrank": ("ease_lowrank", {}),  # fits only where EASE is refused (min_items = EASE_MAX_ITEMS, runs.py)
    "content": ("content", {"history_half_life_days": "recency"}),
    "neural": ("neural", {}),
    "sequence": ("sequence", {}),
}


def recommender_class(name: str) -> type[Recommender]:
    """The class registered under `name`; ValueError for a name no release of ours wrote."""
    try:
        module_name, class_name = RECOMMENDER_PATHS[name].split(":")
    except KeyError:
        raise ValueError(f"unknown recommender {name!r}") from None
    return getattr(import_module(module_name), class_name)


class _LazyClasses(dict):
    """`RECOMMENDER_CLASSES[name]` imports on first use (the mapping blend.load reads)."""

    def __missing__(self, name: str) -> type[Recommender]:
        cls = recommender_class(name)
        self[name] = cls
        return cls

    def __contains__(self, name: object) -> bool:
        return name in RECOMMENDER_PATHS


RECOMMENDER_CLASSES: dict[str, type[Recommender]] = _LazyClasses()


def build_candidate(
    name: str, recency_half_life_days: float, class_params: dict[str, dict[str, Any]] | None = None
) -> Recommender:
    """A fresh, unfitted recommender for candidate `name`.

    `class_params` adds parameters per recommender class name (the settings' NEURAL dict, EASE's max_items),
    over the recipe's own.
    """
    class_name, params = CANDIDATE_SPECS[name]
    resolved = {k: (float(recency_half_life_days) if v == "recency" else v) for k, v in params.items()}
    resolved.update((class_params or {}).get(class_name, {}))
    return recommender_class(class_name)(**resolved)
