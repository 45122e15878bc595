"""EASE for catalogs too big for its dense inverse: the same closed form on a low-rank-plus-diagonal Gram matrix.

EASE (Steck 2019) needs P = (XᵀX + λI)⁻¹, a dense items x items inverse: 10k items is 400 MB and a minute, 200k
items is out of reach. Here XᵀX is replaced by V Λ Vᵀ + R: its top `rank` eigenpairs, found by a randomized
range finder on the sparse X (a few sparse products, no items x items matrix ever), plus R, the diagonal the
eigenpairs leave out (each item's own mass, so a popular item is still damped like EASE damps it). Woodbury then
gives P and its diagonal in closed form, and EASE's weights B = I - P / diag(P) factor as U · (V c)ᵀ with the
diagonal removed: two items x rank matrices, scored as (X U)(V c)ᵀ. With rank = items it is EASE exactly (a test
holds it to that).

Memory and time follow items x rank, not items squared: 200k items at rank 256 is two 200 MB float32 matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recommendations.engine.base import EvalSet, Interactions, ItemFeatures, ProgressCallback, check_items
from recommendations.engine.baselines import _Fitted, _same_catalog, align

DEFAULT_RANK = 256
OVERSAMPLE = 16
POWER_ITERATIONS = 2
# λ tried on validation (scores of a sample of shoppers); the first is the default without validation.
L2_GRID = (200.0, 50.0, 800.0)
SEARCH_SHOPPERS = 1000
SEARCH_BATCH = 250


def orthonormal_columns(a: np.ndarray, passes: int = 2) -> np.ndarray:
    """An orthonormal basis of a's column space (float32 stays float32), dropping directions it does not span.

    Through the small Gram aᵀa (width x width, float64): two matrix products per pass instead of a Householder QR
    of a tall matrix, which at 200k rows is ten times slower on two cores. One pass leaves float32 columns nearly
    orthonormal, enough between power steps; the second makes them orthonormal to rounding.
    """
    for _ in range(passes):
        gram = (a.T @ a).astype(np.float64)
        values, vectors = np.linalg.eigh(gram)
        keep = values > values.max(initial=0.0) * 1e-9
        if not keep.any():
            return np.zeros((a.shape[0], 0), dtype=a.dtype)
        a = a @ (vectors[:, keep] / np.sqrt(values[keep])).astype(a.dtype)
    return a


def top_eigenpairs(
    x: Any, rank: int, seed: int = 0, power_iterations: int = POWER_ITERATIONS
) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, items x rank eigenvectors) of XᵀX, largest first, by a randomized range finder (Halko et al.).

    Only products with the sparse X and of items x (rank + oversampling) blocks, in float32: memory is linear in
    items. Each power step orthonormalizes after X and after Xᵀ, so a block never holds the squared spread.
    """
    n = x.shape[1]
    width = min(n, rank + OVERSAMPLE)
    if width == 0 or x.nnz == 0:
        return np.zeros(0), np.zeros((n, 0))
    x = x.astype(np.float32)
    xt = x.T.tocsr()
    basis = np.random.default_rng(seed).standard_normal((n, width), dtype=np.float32)
    for _ in range(power_iterations):
        shopper_side = orthonormal_columns(x @ basis, passes=1)
        del basis  # one items x width block alive at a time (218 MB at 200k items), not three
        basis = orthonormal_columns(xt @ shopper_side, passes=1)
        del shopper_side
    basis = orthonormal_columns(basis)
    projected = x @ basis  # shoppers x width
    small = (projected.T @ projected).astype(np.float64)  # = basisᵀ XᵀX basis
    values, vectors = np.linalg.eigh((small + small.T) / 2)
    order = np.argsort(values)[::-1][: min(rank, values.size)]
    values = np.maximum(values[order], 0.0)
    return values, basis @ vectors[:, order].astype(np.float32)


def _row_blocks(n: int, size: int = 16384) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def lowrank_ease_factors(
    values: np.ndarray, vectors: np.ndarray, gram_diagonal: np.ndarray, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """(U, W) with EASE's weights B[i, j] = U[i] · W[j] for i != j, for the Gram V diag(values) Vᵀ + R.

    R = diag(XᵀX) minus what the eigenpairs explain (never negative); D = R + λ. Woodbury:
    P = D⁻¹ - D⁻¹ V M Vᵀ D⁻¹ with M = (diag(values)⁻¹ + Vᵀ D⁻¹ V)⁻¹, so off the diagonal
    B[i, j] = -P[i, j] / P[j, j] = (D⁻¹ V M)[i] · V[j] / (D[j] P[j, j]).
    """
    # Items x rank arrays stay in the eigenvectors' float32; only rank x rank matrices and per-item vectors are
    # float64 (the small solve is where precision matters).
    explained = np.einsum("ij,ij,j->i", vectors, vectors, values.astype(vectors.dtype)).astype(np.float64)
    d = np.maximum(gram_diagonal - explained, 0.0) + float(l2)
    keep = values > values.max(initial=0.0) * 1e-10
    if not keep.all():
        vectors, values = vectors[:, keep], values[keep]
    inv_d = (1.0 / d).astype(vectors.dtype)
    # D⁻¹ V is only ever needed a block of rows at a time: no third items x rank array besides V, U and W.
    inner = np.diag(1.0 / values)
    for rows in _row_blocks(vectors.shape[0]):
        inner += (vectors[rows].T @ (vectors[rows] * inv_d[rows, None])).astype(np.float64)
    m = np.linalg.inv((inner + inner.T) / 2).astype(vectors.dtype)
    u = np.empty_like(vectors)
    for rows in _row_blocks(vectors.shape[0]):
        u[rows] = (vectors[rows] * inv_d[rows, None]) @ m
    p_diag = 1.0 / d - np.einsum("ij,ij->i", u, vectors).astype(np.float64) / d
    w = vectors / (d * p_diag)[:, None].astype(vectors.dtype)
    return u, w


class LowRankEASE(_Fitted):
    """EASE's closed form on a rank-`rank` + diagonal Gram matrix; fits catalogs of 200k items on two cores.

    `min_items`: refuse catalogs of that many items or fewer (ValueError, as EASE refuses big ones), so a
    retrain that lists both fits exact EASE where it runs and this one only where EASE is refused.
    """

    name = "ease_lowrank"

    def __init__(
        self,
        rank: int = DEFAULT_RANK,
        l2: float | None = None,
        history_half_life_days: float | None = None,
        min_items: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            rank=rank, l2=l2, history_half_life_days=history_half_life_days, min_items=min_items, seed=seed
        )
        self.rank = int(rank)
        self.history_half_life_days = history_half_life_days
        self.min_items = int(min_items)
        self.seed = int(seed)
        self.u: np.ndarray | None = None
        self.w: np.ndarray | None = None
        self.diagonal: np.ndarray | None = None
        self._validation: EvalSet | None = None

    def _check_catalog(self, features: ItemFeatures) -> None:
        if features.n_items <= self.min_items:
            raise ValueError(
                f"catalog of {features.n_items} items fits exact EASE; ease_lowrank runs above {self.min_items}"
            )

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """The shared fit (catalog check, timing); validation is held for `_fit_arrays`' λ search meanwhile."""
        self._validation = validation
        try:
            return super().fit(train, features, validation, on_progress)
        finally:
            self._validation = None

    def _fit_arrays(self, train: Interactions, on_progress: ProgressCallback | None) -> dict[str, Any]:
        x = train.matrix(self.history_half_life_days)
        steps = 2 + len(L2_GRID)
        if on_progress is not None:
            on_progress("ease_lowrank", 0, steps)
        values, vectors = top_eigenpairs(x, self.rank, seed=self.seed)
        gram_diagonal = np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel()
        if on_progress is not None:
            on_progress("ease_lowrank", 1, steps)
        fixed = self.params.get("l2")
        grid = [float(fixed)] if fixed is not None else list(L2_GRID)
        validation = self._validation
        if validation is None or not validation.n_shoppers:
            grid = grid[:1]
        tried: list[dict[str, float]] = []
        best: tuple[float, float] | None = None
        for step, l2 in enumerate(grid):
            self.u = self.w = None  # the previous λ's factors go before the next are built (400 MB at 200k items)
            self._set_factors(*lowrank_ease_factors(values, vectors, gram_diagonal, l2))
            if len(grid) > 1:
                from recommendations.engine.metrics import evaluate_scores

                assert validation is not None
                sample = validation.sample(SEARCH_SHOPPERS)
                # Small batches: at 200k items a batch of 1,000 shoppers' dense scores alone is 800 MB.
                ndcg = float(evaluate_scores(self.score, sample, batch_size=SEARCH_BATCH)["ndcg"])
                tried.append({"l2": l2, "ndcg": round(ndcg, 4)})
                if best is None or ndcg > best[0]:
                    best = (ndcg, l2)
            if on_progress is not None:
                on_progress("ease_lowrank", 2 + step, steps)
        chosen = grid[0] if best is None else best[1]
        if chosen != grid[-1]:  # the factors in hand are the last λ tried: rebuild the chosen one's
            self.u = self.w = None
            self._set_factors(*lowrank_ease_factors(values, vectors, gram_diagonal, chosen))
        stats: dict[str, Any] = {"n_items": train.n_items, "rank": int(values.size), "chosen": {"l2": chosen}}
        if tried:
            stats["grid"] = tried
        return stats

    def _set_factors(self, u: np.ndarray, w: np.ndarray) -> None:
        self.u = u.astype(np.float32, copy=False)
        self.w = w.astype(np.float32, copy=False)
        self.diagonal = np.einsum("ij,ij->i", self.u, self.w)

    def score(self, history: Interactions) -> np.ndarray:
        self._require_fit()
        assert self.u is not None and self.w is not None and self.diagonal is not None
        check_items(history, self.u.shape[0])
        x = history.matrix(self.history_half_life_days)
        scores = np.asarray(x @ self.u, dtype=np.float32) @ self.w.T
        # B has a zero diagonal: a shopper's own item does not vote for itself.
        coo = x.tocoo()
        scores[coo.row, coo.col] -= coo.data * self.diagonal[coo.col]
        return scores

    def _arrays(self) -> dict[str, Any]:
        return {"u": self.u, "w": self.w}

    def _restore(self, arrays: dict[str, np.ndarray], item_ids: list[str]) -> None:
        if _same_catalog(arrays["item_ids"], item_ids):
            # The usual load (the run's own verify, a precompute soon after): no second items x rank copy of each.
            self._set_factors(arrays["u"], arrays["w"])
            return
        old, new = align(arrays["item_ids"], item_ids)
        factors = []
        for key in ("u", "w"):
            out = np.zeros((len(item_ids), arrays[key].shape[1]), dtype=np.float32)
            out[new] = arrays[key][old]
            factors.append(out)
        self._set_factors(*factors)
