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
import scipy.sparse as sp

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


def standardize_rows(scores: np.ndarray, in_place: bool = False) -> np.ndarray:
    """(s - row mean) / row std as float32; a constant row (no opinion, or one with NaN) becomes zeros.

    A block of rows at a time small enough to stay in cache: the means are summed in float64 and subtracted in
    float64 (a row of 1,000 ± 0.01 keeps its digits), the variances of the centred float32 rows summed in float32
    (numpy's pairwise SIMD sums: last-bit differences from float64). A constant row centres to exact zeros, so a
    zero variance is what marks it: no max and min passes. `in_place` overwrites `scores` when it is float32 (a
    caller that owns the array, as a score batch is its caller's): a fresh 100 MB array per 200,000-item batch cost
    as much in page faults as the arithmetic.
    """
    s = np.asarray(scores)
    out = s if in_place and s.dtype == np.float32 and s.flags.writeable else np.empty(s.shape, dtype=np.float32)
    if s.size == 0:
        return out
    n = s.shape[1]
    block = max(1, STANDARDIZE_BLOCK_CELLS // n)
    for start in range(0, s.shape[0], block):
        rows, part = s[start : start + block], out[start : start + block]
        means = np.add.reduce(rows, axis=1, dtype=np.float64) / n
        np.subtract(rows, means[:, None], out=part, casting="unsafe")
        variance = np.einsum("ij,ij->i", part, part) / np.float32(n)
        opinion = np.isfinite(variance) & (variance > 0)
        scale = np.zeros(variance.shape, dtype=np.float32)
        np.divide(np.float32(1.0), np.sqrt(variance, where=opinion, out=scale), out=scale, where=opinion)
        part *= scale[:, None]
        if not opinion.all():
            part[~opinion] = 0.0  # NaN x 0 is NaN
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
            z = standardize_rows(component.score(history), in_place=True)  # Recommender.score: the caller's
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


# The search ranks each weighting among the cells `search_pool` keeps while they are at most this share of the batch;
# past it (a sparse component such as item-kNN ties most cells at its row's floor) the full rows are cheaper.
POOL_MAX_SHARE = 0.25


def search_pool(
    standardized: Sequence[np.ndarray],
    k: int,
    seen: sp.spmatrix | None,
    mask: np.ndarray | None,
    out: np.ndarray,
    scratch: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cells (flat indices, row by row, and their columns) that can reach any weighting's top k, or None when
    they are more than POOL_MAX_SHARE of the batch.

    With weights ≥ 0 summing to 1, an item's blend lies between the least and the largest of its standardized
    scores (m, M). Every weighting's k-th best in a row is then at least L, the k-th best m among the row's listable
    items; an item whose M is below L cannot enter any top k. On the 200,000-product bench shop that left about 400
    cells a row for 21 weightings. The margin covers float32 rounding of the weighted sums (a few ulps of
    |z| ≤ √items), so the pool holds every cell the full rows would list, ties included. `out` and `scratch`
    (the batch's shape) are overwritten.
    """
    least, most = out, scratch
    np.copyto(least, standardized[0])
    np.copyto(most, standardized[0])
    for z in standardized[1:]:
        np.minimum(least, z, out=least)
        np.maximum(most, z, out=most)
    lists = top_k_scratch(least, k, exclude=seen, allowed=mask)  # masks unlistable cells of `least` to -inf
    n_rows, n_items = least.shape
    floor = np.full(n_rows, -np.inf, dtype=np.float32)
    full = lists[:, -1] >= 0
    floor[full] = least[np.flatnonzero(full), lists[full, -1]]
    margin = np.float32(1e-5 * (1.0 + np.sqrt(n_items)))
    keep = most >= (floor - margin)[:, None]
    keep &= least != -np.inf
    cells = np.flatnonzero(keep)
    if cells.size > POOL_MAX_SHARE * keep.size:
        return None
    return cells, cells % n_items


def _pool_top_k(rows: np.ndarray, columns: np.ndarray, values: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """top_k over a pool of cells (row of each, column, value): best first, ties to the lower column, -1 pads."""
    order = np.lexsort((columns, -values, rows))
    return metrics.first_k_per_row(rows[order], columns[order], n_rows, k)


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
    # The pool's bound holds for weights ≥ 0 that sum to 1 (every simplex grid); an explicit grid may hold others.
    convex = all(min(w) >= 0 and abs(sum(w) - 1.0) <= 1e-6 for w in candidates)
    for codes, history, seen in eval_batches(validation, min(batch_size, rows)):
        standardized = [
            # A scorer's batch is a new array (Recommender.score's contract; indexing copies): standardized in place.
            standardize_rows(scorer(history) if callable(scorer) else np.asarray(scorer)[codes], in_place=True)
            for scorer in scorers
        ]
        targets = accumulators[0].prepare([validation.targets[c] for c in codes])  # shared by every candidate
        out, scratch = np.empty_like(standardized[0]), np.empty_like(standardized[0])
        pool = search_pool(standardized, k, seen, mask, out=out, scratch=scratch) if convex else None
        if pool is not None:
            cells, columns = pool
            values = [z.reshape(-1)[cells] for z in standardized]
            pool_out, pool_scratch = np.empty_like(values[0]), np.empty_like(values[0])
        for weights, acc in zip(candidates, accumulators, strict=True):
            if pool is None:
                blended = _weighted_sum(weights, standardized, out=out, scratch=scratch)
                acc.add(top_k_scratch(blended, k, exclude=seen, allowed=mask), targets)
            else:
                blended = _weighted_sum(weights, values, out=pool_out, scratch=pool_scratch)
                acc.add(_pool_top_k(cells // n_items, columns, blended, len(codes), k), targets)
    ndcgs = [acc.result()["ndcg"] for acc in accumulators]
    best = int(np.argmax(ndcgs))
    return [float(w) for w in candidates[best]], float(ndcgs[best])
