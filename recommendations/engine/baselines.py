"""The numpy baselines every learned model has to beat: popularity, item-kNN and EASE.

Each fits on `Interactions`, scores any batch of histories with numpy/scipy alone, and saves as one .npz
(arrays plus the product ids of its item columns) next to params.json. `load` re-aligns the columns to the
catalog it is given by product id: products the model never saw score 0, removed products vanish.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from recommendations.engine.base import EvalSet, Interactions, ItemFeatures, ProgressCallback, Recommender, decay
from recommendations.engine.cooccurrence import DEFAULT_ITEM_CHUNK, DEFAULT_SHRINKAGE, item_neighbours

ARRAYS_FILE = "model.npz"
# EASE inverts an items x items matrix: float64 while that is cheap, float32 above (half the memory).
EASE_FLOAT64_MAX_ITEMS = 4096


def _check_items(data: Interactions, n_items: int) -> None:
    if data.n_items != n_items:
        raise ValueError(f"interactions cover {data.n_items} items, the model {n_items}")


def _save_arrays(directory: Path, item_ids: list[str], **arrays: np.ndarray) -> None:
    ids = np.array(item_ids, dtype=str) if item_ids else np.zeros(0, dtype="<U1")
    np.savez(Path(directory) / ARRAYS_FILE, item_ids=ids, **arrays)


def _load_arrays(directory: Path) -> dict[str, np.ndarray]:
    with np.load(Path(directory) / ARRAYS_FILE, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


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
    """Per item: Σ over distinct shoppers of their strongest (decayed) event weight on it.

    Each shopper counts once per item, so one bot viewing a product a thousand times weighs like one shopper.
    """
    scores = np.zeros(data.n_items, dtype=np.float64)
    keep = data.weight > 0
    if not keep.any():
        return scores
    weight = data.weight[keep].astype(np.float64)
    if half_life_days is not None:
        weight = weight * decay(data.age_days[keep], half_life_days)
    pair = data.shopper[keep].astype(np.int64) * data.n_items + data.item[keep]
    order = np.argsort(pair, kind="stable")
    pair, weight = pair[order], weight[order]
    starts = np.r_[0, np.flatnonzero(np.diff(pair)) + 1]
    strongest = np.maximum.reduceat(weight, starts)
    np.add.at(scores, pair[starts] % data.n_items, strongest)
    return scores


class _Fitted(Recommender):
    """Shared bookkeeping: the product ids of the item columns, and a guard against scoring unfitted."""

    item_ids: list[str] | None = None

    def _require_fit(self) -> list[str]:
        if self.item_ids is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self.item_ids

    def _start_fit(self, train: Interactions, features: ItemFeatures) -> float:
        _check_items(train, features.n_items)
        self.item_ids = list(features.item_ids)
        return time.perf_counter()


class Popularity(_Fitted):
    """The same list for everyone: the most popular items, or with a half-life the trending ones."""

    name = "popularity"

    def __init__(self, half_life_days: float | None = None) -> None:
        super().__init__(half_life_days=half_life_days)
        self.half_life_days = half_life_days
        self.item_scores: np.ndarray | None = None

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        started = self._start_fit(train, features)
        self.item_scores = popularity_scores(train, self.half_life_days).astype(np.float32)
        if on_progress is not None:
            on_progress("popularity", 1, 1)
        return {"seconds": time.perf_counter() - started, "n_items": train.n_items, "n_events": train.n_events}

    def score(self, history: Interactions) -> np.ndarray:
        self._require_fit()
        assert self.item_scores is not None
        _check_items(history, self.item_scores.size)
        return np.broadcast_to(self.item_scores, (history.n_shoppers, self.item_scores.size)).copy()

    def save(self, directory: Path) -> None:
        ids = self._require_fit()
        _save_arrays(directory, ids, item_scores=self.item_scores)
        self._write_params(directory)

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> Popularity:
        model = cls(**cls._read_params(directory)["params"])
        arrays = _load_arrays(directory)
        model.item_ids = list(features.item_ids)
        model.item_scores = realign_vector(arrays["item_scores"], arrays["item_ids"], model.item_ids)
        return model


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

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        started = self._start_fit(train, features)
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
        return {"seconds": time.perf_counter() - started, "n_items": train.n_items, "nnz": int(similarity.nnz)}

    def score(self, history: Interactions) -> np.ndarray:
        self._require_fit()
        assert self.similarity is not None
        _check_items(history, self.similarity.shape[0])
        return (history.matrix(self.history_half_life_days) @ self.similarity).toarray().astype(np.float32)

    def save(self, directory: Path) -> None:
        ids = self._require_fit()
        assert self.similarity is not None
        s = self.similarity
        _save_arrays(directory, ids, indptr=s.indptr, indices=s.indices, data=s.data)
        self._write_params(directory)

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> ItemKNN:
        model = cls(**cls._read_params(directory)["params"])
        arrays = _load_arrays(directory)
        n = arrays["item_ids"].size
        similarity = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n))
        model.item_ids = list(features.item_ids)
        model.similarity = realign_sparse(similarity, arrays["item_ids"], model.item_ids)
        return model


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

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        n = features.n_items
        if n > self.max_items:
            raise ValueError(f"catalog of {n} items is too large for EASE (max_items={self.max_items})")
        started = self._start_fit(train, features)
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
        return {"seconds": time.perf_counter() - started, "n_items": n, "dtype": np.dtype(dtype).name}

    def score(self, history: Interactions) -> np.ndarray:
        self._require_fit()
        assert self.weights is not None
        _check_items(history, self.weights.shape[0])
        return np.asarray(history.matrix(self.history_half_life_days) @ self.weights, dtype=np.float32)

    def save(self, directory: Path) -> None:
        ids = self._require_fit()
        _save_arrays(directory, ids, weights=self.weights)
        self._write_params(directory)

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> EASE:
        model = cls(**cls._read_params(directory)["params"])
        arrays = _load_arrays(directory)
        model.item_ids = list(features.item_ids)
        model.weights = realign_dense(arrays["weights"], arrays["item_ids"], model.item_ids)
        return model
