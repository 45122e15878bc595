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

from recommendations.engine import metrics
from recommendations.engine.base import EvalSet, Interactions, ItemFeatures, ProgressCallback, Recommender
from recommendations.engine.metrics import (
    MetricAccumulator,
    ScoreFn,
    allowed_mask,
    eval_batches,
    top_k_scratch,
)

DEFAULT_GRID_STEP = 0.1
STANDARDIZE_BLOCK_CELLS = 200_000


def standardize_rows(scores: np.ndarray) -> np.ndarray:
    """(s - row mean) / row std as float32; a constant row (no opinion, or one with NaN) becomes zeros.

    Means and variances are summed in float64 over the float32 centred row, a block of rows at a time small enough
    to stay in cache: a float64 copy of each block and numpy's std (five passes more) took 2.5 x as long on a
    125 x 200,000 batch, for differences in the last float32 bit.
    """
    s = np.asarray(scores)
    out = np.empty(s.shape, dtype=np.float32)
    if s.size == 0:
        return out
    n = s.shape[1]
    block = max(1, STANDARDIZE_BLOCK_CELLS // n)
    for start in range(0, s.shape[0], block):
        rows, part = s[start : start + block], out[start : start + block]
        varies = rows.max(axis=1) > rows.min(axis=1)
        np.subtract(rows, rows.mean(axis=1, dtype=np.float64)[:, None], out=part, casting="unsafe")
        variance = np.einsum("ij,ij->i", part, part, dtype=np.float64) / n
        scale = np.zeros(variance.shape, dtype=np.float64)
        np.divide(1.0, np.sqrt(variance), out=scale, where=varies & (variance > 0))
        part *= scale.astype(np.float32)[:, None]
        part[~varies] = 0.0  # NaN x 0 is NaN
    return out


def _weighted_sum(
    weights: Sequence[float], standardized: Sequence[np.ndarray | None], out: np.ndarray, scratch: np.ndarray
) -> np.ndarray:
    """Σ wᵢ·zᵢ in float32 into `out`, skipping zero weights: w₁·z₁, then += wᵢ·zᵢ, the arithmetic `Blend.score`
    does component by component, so the search ranks exactly what the blend will serve.

    `out` and `scratch` (float32, the scores' shape) are the search's, reused for every weighting: a fresh 100 MB
    array per weighting cost a third of its time in page faults on a 200,000-item batch.
    """
    total: np.ndarray | None = None
    for weight, z in zip(weights, standardized, strict=True):
        if not weight or z is None:
            continue
        if total is None:
            total = np.multiply(z, np.float32(weight), dtype=np.float32, out=out)
        else:
            total += np.multiply(z, np.float32(weight), out=scratch)
    if total is None:
        out.fill(0.0)
        return out
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
        # _weighted_sum's arithmetic (w₁·z₁, then += wᵢ·zᵢ in float32), one component at a time, so a batch holds
        # one component's scores beside the total rather than all of them (100 MB each at 200k items).
        weights = self.weights if self.weights is not None else self._equal_weights()
        total: np.ndarray | None = None
        for weight, component in zip(weights, self.components, strict=True):
            if not weight:
                continue
            z = standardize_rows(component.score(history))
            z *= np.float32(weight)
            if total is None:
                total = z
            else:
                total += z
            del z
        if total is None:
            return np.zeros((history.n_shoppers, history.n_items), dtype=np.float32)
        return total

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
    # A batch holds every component's standardized scores and two buffers: as many cells in all as one
    # evaluation's batch has twice (EVAL_BLOCK_CELLS), so a wide catalog's search stays within the memory of scoring.
    rows = max(1, 2 * metrics.EVAL_BLOCK_CELLS // ((len(scorers) + 2) * max(n_items, 1)))
    for codes, history, seen in eval_batches(validation, min(batch_size, rows)):
        standardized = [
            standardize_rows(scorer(history) if callable(scorer) else np.asarray(scorer)[codes]) for scorer in scorers
        ]
        targets = accumulators[0].prepare([validation.targets[c] for c in codes])  # shared by every candidate
        out, scratch = np.empty_like(standardized[0]), np.empty_like(standardized[0])
        for weights, acc in zip(candidates, accumulators, strict=True):
            blended = _weighted_sum(weights, standardized, out=out, scratch=scratch)
            acc.add(top_k_scratch(blended, k, exclude=seen, allowed=mask), targets)
    ndcgs = [acc.result()["ndcg"] for acc in accumulators]
    best = int(np.argmax(ndcgs))
    return [float(w) for w in candidates[best]], float(ndcgs[best])
