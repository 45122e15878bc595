"""The numpy baselines every learned model has to beat: popularity, item-kNN and EASE.

Each fits on `Interactions`, scores any batch of histories with numpy/scipy alone, and saves as one .npz
(arrays plus the product ids of its item columns) next to params.json. `load` re-aligns the columns to the
catalog it is given by product id: products the model never saw score 0, removed products vanish.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from recommendations.engine.base import (
    EvalSet,
    Interactions,
    ItemFeatures,
    ProgressCallback,
    Recommender,
    check_items,
    decay,
    item_id_array,
    read_arrays,
)
from recommendations.engine.cooccurrence import (
    DEFAULT_ITEM_CHUNK,
    DEFAULT_SHRINKAGE,
    item_neighbours,
    strongest_signal_scores,
)

ARRAYS_FILE = "model.npz"
# EASE inverts an items x items matrix: float64 while that is cheap, float32 above (half the memory).
EASE_FLOAT64_MAX_ITEMS = 4096


def align(old_ids: list[str] | np.ndarray, new_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(old positions, new positions) of the product ids present in both catalogs, in new-catalog order."""
    old_pos = {str(pid): i for i, pid in enumerate(old_ids)}
    pairs = [(old_pos[pid], j) for j, pid in enumerate(new_ids) if pid in old_pos]
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    old, new = np.array(pairs, dtype=np.int64).T
    return old, new


def _same_catalog(old_ids: np.ndarray, new_ids: list[str]) -> bool:
    return len(old_ids) == len(new_ids) and all(str(a) == b for a, b in zip(old_ids.tolist(), new_ids, strict=True))


def realign_vector(values: np.ndarray, old_ids: np.ndarray, new_ids: list[str]) -> np.ndarray:
    """A per-item vector moved to the new catalog's columns (0 for new products)."""
    if _same_catalog(old_ids, new_ids):
        return values
    old, new = align(old_ids, new_ids)
    out = np.zeros(len(new_ids), dtype=values.dtype)
    out[new] = values[old]
    return out


def realign_sparse(matrix: sp.csr_matrix, old_ids: np.ndarray, new_ids: list[str]) -> sp.csr_matrix:
    """An item x item sparse matrix moved to the new catalog (rows and columns of removed products dropped)."""
    if _same_catalog(old_ids, new_ids):
        return matrix
    old, new = align(old_ids, new_ids)
    to_new = np.full(len(old_ids), -1, dtype=np.int64)
    to_new[old] = new
    coo = matrix.tocoo()
    row, col = to_new[coo.row], to_new[coo.col]
    keep = (row >= 0) & (col >= 0)
    n = len(new_ids)
    out = sp.coo_matrix((coo.data[keep], (row[keep], col[keep])), shape=(n, n)).tocsr()
    out.sort_indices()
    return out


def realign_dense(matrix: np.ndarray, old_ids: np.ndarray, new_ids: list[str]) -> np.ndarray:
    """An item x item dense matrix moved to the new catalog (new products: zero rows and columns)."""
    if _same_catalog(old_ids, new_ids):
        return matrix
    old, new = align(old_ids, new_ids)
    out = np.zeros((len(new_ids), len(new_ids)), dtype=matrix.dtype)
    out[np.ix_(new, new)] = matrix[np.ix_(old, old)]
    return out


def popularity_scores(data: Interactions, half_life_days: float | None = None) -> np.ndarray:
    """Per item: Σ over distinct shoppers of their strongest (decayed) event weight on it; one bot counts once."""
    keep = data.weight > 0
    weight = data.weight[keep].astype(np.float64)
    if half_life_days is not None:
        weight = weight * decay(data.age_days[keep], half_life_days)
    return strongest_signal_scores(data.shopper[keep], data.item[keep], weight, data.n_items)


class _Fitted(Recommender):
    """Shared bookkeeping: the product ids of the item columns, a guard against scoring unfitted, and persistence.

    Every baseline learns a few arrays over the item columns from the training events alone, so fit, save and
    load are written once here: a subclass computes its arrays (`_fit_arrays`), names them (`_arrays`) and moves
    them to a possibly different catalog (`_restore`).
    """

    item_ids: list[str] | None = None

    def _require_fit(self) -> list[str]:
        if self.item_ids is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self.item_ids

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Check the catalog, learn the arrays, and report the seconds taken plus the subclass's own stats."""
        self._check_catalog(features)
        check_items(train, features.n_items)
        self.item_ids = list(features.item_ids)
        started = time.perf_counter()
        stats = self._fit_arrays(train, on_progress)
        return {"seconds": time.perf_counter() - started, **stats}

    def _check_catalog(self, features: ItemFeatures) -> None:
        """Refuse a catalog this model cannot fit, before any state changes (nothing to refuse by default)."""

    @abstractmethod
    def _fit_arrays(self, train: Interactions, on_progress: ProgressCallback | None) -> dict[str, Any]:
        """Learn the fitted state from `train` (its items are the catalog's); returns stats worth recording."""

    @abstractmethod
    def _arrays(self) -> dict[str, Any]:
        """The fitted state, as the arrays `save` writes (the product ids are added to them)."""

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray], item_ids: list[str]) -> None:
        """Set the fitted state from `save`'s arrays, re-aligned from arrays["item_ids"] to `item_ids`."""

    def save(self, directory: Path) -> None:
        ids = self._require_fit()
        np.savez(Path(directory) / ARRAYS_FILE, item_ids=item_id_array(ids), **self._arrays())
        self._write_params(directory)

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> Self:
        model, _ = cls._from_params(directory)
        arrays = read_arrays(Path(directory) / ARRAYS_FILE)
        model.item_ids = list(features.item_ids)
        model._restore(arrays, model.item_ids)
        return model


class Popularity(_Fitted):
    """The same list for everyone: the most popular items, or with a half-life the trending ones."""

    name = "popularity"

    def __init__(self, half_life_days: float | None = None) -> None:
        super().__init__(half_life_days=half_life_days)
        self.half_life_days = half_life_days
        self.item_scores: np.ndarray | None = None

    def _fit_arrays(self, train: Interactions, on_progress: ProgressCallback | None) -> dict[str, Any]:
        self.item_scores = popularity_scores(train, self.half_life_days).astype(np.float32)
        if on_progress is not None:
            on_progress("popularity", 1, 1)
        return {"n_items": train.n_items, "n_events": train.n_events}

    def score(self, history: Interactions) -> np.ndarray:
        self._require_fit()
        assert self.item_scores is not None
        check_items(history, self.item_scores.size)
        return np.broadcast_to(self.item_scores, (history.n_shoppers, self.item_scores.size)).copy()

    def shared_scores(self) -> np.ndarray | None:
        self._require_fit()
        return self.item_scores

    def _arrays(self) -> dict[str, Any]:
        return {"item_scores": self.item_scores}

    def _restore(self, arrays: dict[str, np.ndarray], item_ids: list[str]) -> None:
        self.item_scores = realign_vector(arrays["item_scores"], arrays["item_ids"], item_ids)


class ItemKNN(_Fitted):
    """Item-item cosine neighbours (shrunk by co-shopper support); score = history @ S.

    S keeps the `neighbours` best items per item and is built a block of items at a time, so a 50k catalog
    fits in bounded memory. With `history_half_life_days`, both the training matrix and the scored history are
    recency-weighted, so what a shopper looked at today outweighs last season's interest.
    """

    name = "item_knn"

    def __init__(
        self,
        neighbours: int = 100,
        shrinkage: float = DEFAULT_SHRINKAGE,
        history_half_life_days: float | None = None,
        item_chunk: int = DEFAULT_ITEM_CHUNK,
    ) -> None:
        super().__init__(
            neighbours=neighbours,
            shrinkage=shrinkage,
            history_half_life_days=history_half_life_days,
            item_chunk=item_chunk,
        )
        self.neighbours = int(neighbours)
        self.shrinkage = float(shrinkage)
        self.history_half_life_days = history_half_life_days
        self.item_chunk = int(item_chunk)
        self.similarity: sp.csr_matrix | None = None

    def _fit_arrays(self, train: Interactions, on_progress: ProgressCallback | None) -> dict[str, Any]:
        done = [0]

        def chunk_done(n: int) -> None:
            done[0] += n
            if on_progress is not None:
                on_progress("item_knn", done[0], train.n_items)

        similarity = item_neighbours(
            train.matrix(self.history_half_life_days),
            self.neighbours,
            np.ones(train.n_items, dtype=bool),
            shrinkage=self.shrinkage,
            chunk_size=self.item_chunk,
            on_chunk=chunk_done,
        )
        self.similarity = similarity.astype(np.float32)
        return {"n_items": train.n_items, "nnz": int(similarity.nnz)}

    def score(self, history: Interactions) -> np.ndarray:
        self._require_fit()
        assert self.similarity is not None
        check_items(history, self.similarity.shape[0])
        return (history.matrix(self.history_half_life_days) @ self.similarity).toarray().astype(np.float32, copy=False)

    def _arrays(self) -> dict[str, Any]:
        assert self.similarity is not None
        s = self.similarity
        return {"indptr": s.indptr, "indices": s.indices, "data": s.data}

    def _restore(self, arrays: dict[str, np.ndarray], item_ids: list[str]) -> None:
        n = arrays["item_ids"].size
        similarity = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n))
        self.similarity = realign_sparse(similarity, arrays["item_ids"], item_ids)


class EASE(_Fitted):
    """Embarrassingly Shallow Autoencoder (Steck 2019): B = I - P / diag(P), P = (XᵀX + λI)⁻¹; score = X @ B.

    A dense items x items solve, so it refuses catalogs above `max_items` (10k items ≈ 400 MB for B alone).
    """

    name = "ease"

    def __init__(self, l2: float = 200.0, history_half_life_days: float | None = None, max_items: int = 10000) -> None:
        super().__init__(l2=l2, history_half_life_days=history_half_life_days, max_items=max_items)
        self.l2 = float(l2)
        self.history_half_life_days = history_half_life_days
        self.max_items = int(max_items)
        self.weights: np.ndarray | None = None

    def _check_catalog(self, features: ItemFeatures) -> None:
        n = features.n_items
        if n > self.max_items:
            raise ValueError(f"catalog of {n} items is too large for EASE (max_items={self.max_items})")

    def _fit_arrays(self, train: Interactions, on_progress: ProgressCallback | None) -> dict[str, Any]:
        n = train.n_items
        dtype = np.float64 if n <= EASE_FLOAT64_MAX_ITEMS else np.float32
        x = train.matrix(self.history_half_life_days).astype(dtype)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n)] += self.l2
        if on_progress is not None:
            on_progress("ease", 0, 1)
        p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False) if n else gram
        del gram
        p /= -np.diag(p)[None, :]  # column j divided by -P_jj
        p[np.diag_indices(n)] = 0.0
        self.weights = p.astype(np.float32, copy=False)
        if on_progress is not None:
            on_progress("ease", 1, 1)
        return {"n_items": n, "dtype": np.dtype(dtype).name}

    def score(self, history: Interactions) -> np.ndarray:
        self._require_fit()
        assert self.weights is not None
        check_items(history, self.weights.shape[0])
        return np.asarray(history.matrix(self.history_half_life_days) @ self.weights, dtype=np.float32)

    def _arrays(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def _restore(self, arrays: dict[str, np.ndarray], item_ids: list[str]) -> None:
        self.weights = realign_dense(arrays["weights"], arrays["item_ids"], item_ids)
