"""A weighted blend of candidates, and the validation search for its weights.

Components score on different scales (popularity counts, cosine sums, EASE regression weights, logits), so each
is standardized per shopper row before weighting: the blend mixes "how far above this shopper's average is
this item" in every model's opinion.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recommendations.engine.base import EvalSet, Interactions, ItemFeatures, ProgressCallback, Recommender
from recommendations.engine.metrics import MetricAccumulator, ScoreFn, allowed_mask, eval_batches, top_k_scratch

DEFAULT_GRID_STEP = 0.1
STANDARDIZE_BLOCK_CELLS = 1_000_000


def standardize_rows(scores: np.ndarray) -> np.ndarray:
    """(s - row mean) / row std as float32; a constant row (no opinion) becomes zeros.

    Computed in float64 a block of rows at a time, so a 1000 x 50k batch needs no 400 MB float64 copy.
    """
    s = np.asarray(scores)
    out = np.zeros(s.shape, dtype=np.float32)
    if s.size == 0:
        return out
    block = max(1, STANDARDIZE_BLOCK_CELLS // s.shape[1])
    for start in range(0, s.shape[0], block):
        rows = s[start : start + block].astype(np.float64)
        varies = rows.max(axis=1) > rows.min(axis=1)
        rows -= rows.mean(axis=1, keepdims=True)
        std = rows.std(axis=1, keepdims=True)
        np.divide(rows, std, out=rows, where=varies[:, None])
        rows[~varies] = 0.0
        out[start : start + block] = rows
    return out


def _weighted_sum(
    weights: Sequence[float], standardized: Sequence[np.ndarray | None], shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Σ wᵢ·zᵢ in float32, skipping zero weights; one code path for Blend.score and the weight search."""
    total: np.ndarray | None = None
    for weight, z in zip(weights, standardized, strict=True):
        if not weight or z is None:
            continue
        if total is None:
            total = np.multiply(z, np.float32(weight), dtype=np.float32)
        else:
            total += np.float32(weight) * z
    if total is None:
        return np.zeros(shape if shape is not None else np.shape(standardized[0]), dtype=np.float32)
    return total


class Blend(Recommender):
    """score = Σ wᵢ · standardize_rows(componentᵢ.score). `weights=None`: fit them on validation NDCG@10."""

    name = "blend"

    def __init__(self, components: Sequence[Recommender], weights: Sequence[float] | None = None) -> None:
        if not components:
            raise ValueError("a blend needs at least one component")
        if weights is not None and len(weights) != len(components):
            raise ValueError(f"{len(components)} components but {len(weights)} weights")
        self.components = list(components)
        self.weights = None if weights is None else [float(w) for w in weights]
        super().__init__(weights=self.weights)

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Fit every component; then, if no weights were given, search them on `validation` (equal without)."""
        stats: dict[str, Any] = {}
        for i, component in enumerate(self.components):
            stats[f"{i}-{component.name}"] = component.fit(train, features, validation, on_progress)
        if self.weights is None:
            if validation is not None and validation.n_shoppers:
                self.weights, stats["validation_ndcg"] = fit_blend_weights(self.components, validation)
            else:
                self.weights = self._equal_weights()
            self.params["weights"] = self.weights
        stats["weights"] = self.weights
        return stats

    def score(self, history: Interactions) -> np.ndarray:
        weights = self.weights if self.weights is not None else self._equal_weights()
        standardized = [
            standardize_rows(component.score(history)) if weight else None
            for weight, component in zip(weights, self.components, strict=True)
        ]
        return _weighted_sum(weights, standardized, (history.n_shoppers, history.n_items))

    def _equal_weights(self) -> list[float]:
        """What a blend weighs its components by until weights are given or searched: no opinion, all alike."""
        return [1.0 / len(self.components)] * len(self.components)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        names = []
        for i, component in enumerate(self.components):
            sub = directory / f"{i}-{component.name}"
            sub.mkdir()
            component.save(sub)
            names.append(sub.name)
        self._write_params(directory, {"components": names})

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> Blend:
        # Imported here: candidates imports this module to list Blend among the recommender classes.
        from recommendations.engine.candidates import RECOMMENDER_CLASSES

        directory = Path(directory)
        payload = cls._read_params(directory)
        components = []
        for sub in payload["components"]:
            name = cls._read_params(directory / sub)["name"]
            if name not in RECOMMENDER_CLASSES:
                raise ValueError(f"unknown recommender {name!r} in {directory / sub}")
            components.append(RECOMMENDER_CLASSES[name].load(directory / sub, features))
        return cls(components, payload["params"]["weights"])


def simplex_grid(n_components: int, step: float = DEFAULT_GRID_STEP) -> list[tuple[float, ...]]:
    """Every weight vector with entries in multiples of `step` summing to 1, in lexicographic order."""
    steps = round(1.0 / step)
    if n_components < 1 or steps < 1 or not np.isclose(steps * step, 1.0):
        raise ValueError("need at least one component and a step that divides 1")
    return [
        tuple(c / steps for c in combo)
        for combo in itertools.product(range(steps + 1), repeat=n_components)
        if sum(combo) == steps
    ]


def _as_score_fn(component: Recommender | ScoreFn | np.ndarray) -> ScoreFn | np.ndarray:
    if isinstance(component, Recommender):
        return component.score
    return component


def fit_blend_weights(
    components: Sequence[Recommender | ScoreFn | np.ndarray],
    validation: EvalSet,
    grid: float | Sequence[Sequence[float]] = DEFAULT_GRID_STEP,
    k: int = 10,
    allowed: np.ndarray | None = None,
    batch_size: int = 1000,
) -> tuple[list[float], float]:
    """The grid's weight vector with the best validation NDCG@k, and that NDCG (first of equals wins).

    `components` are recommenders, callables history -> scores, or cached scores for every validation shopper.
    `grid` is a simplex step (3 components at 0.1: 66 vectors) or explicit vectors. Each component scores each
    batch once; every weight vector is then ranked from those standardized scores.
    """
    candidates = simplex_grid(len(components), grid) if isinstance(grid, float | int) else [tuple(g) for g in grid]
    if not candidates:
        raise ValueError("empty weight grid")
    scorers = [_as_score_fn(c) for c in components]
    n_items = validation.history.n_items
    mask = allowed_mask(allowed, n_items)
    n_allowed = int(mask.sum()) if mask is not None else n_items
    accumulators = [MetricAccumulator(k, n_items, n_allowed, validation.cold_items) for _ in candidates]
    for codes, history, seen in eval_batches(validation, batch_size):
        standardized = [
            standardize_rows(scorer(history) if callable(scorer) else np.asarray(scorer)[codes]) for scorer in scorers
        ]
        targets = accumulators[0].prepare([validation.targets[c] for c in codes])  # shared by every candidate
        for weights, acc in zip(candidates, accumulators, strict=True):
            acc.add(top_k_scratch(_weighted_sum(weights, standardized), k, exclude=seen, allowed=mask), targets)
    ndcgs = [acc.result()["ndcg"] for acc in accumulators]
    best = int(np.argmax(ndcgs))
    return [float(w) for w in candidates[best]], float(ndcgs[best])
