"""The shared language of the engine: interaction data, item features, evaluation sets and the Recommender contract.

Every candidate (the numpy baselines and the Keras model) fits on an `Interactions` + `ItemFeatures` pair and
scores shoppers from their history with numpy alone, so precompute and near-real-time refresh never need
TensorFlow: only `fit` of the neural model does. Items are integer columns aligned with `ItemFeatures.item_ids`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

# Event types the engine reads, as small integer codes (0 is padding in sequences).
EVENT_TYPE_CODES: dict[str, int] = {
    "view": 1,
    "click": 2,
    "favorite": 3,
    "add_to_cart": 4,
    "purchase": 5,
}
N_EVENT_TYPE_CODES = len(EVENT_TYPE_CODES) + 1

# One damped cell never drops below this, so ancient events stay structurally present.
MIN_CELL_WEIGHT = 1e-9

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)


def decay(age_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """Halve an event's weight every `half_life_days`."""
    return np.power(0.5, np.asarray(age_days, dtype=np.float64) / float(half_life_days))


def check_items(data: Interactions, n_items: int) -> None:
    """Refuse interactions over another catalog than the model's: item columns would silently mean other products."""
    if data.n_items != n_items:
        raise ValueError(f"interactions cover {data.n_items} items, the model {n_items}")


def item_id_array(item_ids: list[str]) -> np.ndarray:
    """Product ids as a numpy str array for an .npz (an empty catalog too, so loading it never needs pickle)."""
    return np.array(item_ids, dtype=str) if item_ids else np.zeros(0, dtype="<U1")


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of one .npz, read eagerly with pickle refused (artefacts are never pickles)."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


@dataclass
class Interactions:
    """Events of `n_shoppers` shoppers over `n_items` items, sorted by shopper, then time (oldest first).

    `weight` is the event type's weight (EVENT_WEIGHTS), without recency; `age_days` is the age of the event
    before the reference moment (the newest event of the whole data set, so imported history trains like live
    data). Shopper codes are rows 0..n_shoppers-1 of whatever this set is about (train data, or one batch of
    shoppers to score).
    """

    n_shoppers: int
    n_items: int
    shopper: np.ndarray  # int32
    item: np.ndarray  # int32
    event_type: np.ndarray  # int8, EVENT_TYPE_CODES values
    weight: np.ndarray  # float32
    age_days: np.ndarray  # float32, >= 0

    def __post_init__(self) -> None:
        sizes = {a.shape[0] for a in (self.shopper, self.item, self.event_type, self.weight, self.age_days)}
        if len(sizes) > 1:
            raise ValueError("Interactions arrays differ in length")

    @property
    def n_events(self) -> int:
        return int(self.shopper.shape[0])

    def indptr(self) -> np.ndarray:
        """Row pointers: shopper s's events are [indptr[s], indptr[s+1]) (the arrays are sorted by shopper)."""
        counts = np.bincount(self.shopper, minlength=self.n_shoppers)
        return np.r_[0, np.cumsum(counts)].astype(np.int64)

    def matrix(self, half_life_days: float | None = None) -> sp.csr_matrix:
        """Shopper x item: log1p of Σ type weight (x recency decay when a half-life is given), float32.

        log1p so fifty views cannot outweigh a purchase; `half_life_days=None` is the plain, undecayed history.
        """
        shape = (self.n_shoppers, self.n_items)
        keep = self.weight > 0
        if not keep.any():
            return sp.csr_matrix(shape, dtype=np.float32)
        weight = self.weight[keep].astype(np.float64)
        if half_life_days is not None:
            weight = weight * decay(self.age_days[keep], half_life_days)
        matrix = sp.coo_matrix((weight, (self.shopper[keep], self.item[keep])), shape=shape).tocsr()
        matrix.sum_duplicates()
        matrix.data = np.maximum(np.log1p(matrix.data), MIN_CELL_WEIGHT)
        return matrix.astype(np.float32)

    def seen(self) -> sp.csr_matrix:
        """Shopper x item, 1 where the shopper has any event on the item (what evaluation masks)."""
        shape = (self.n_shoppers, self.n_items)
        ones = np.ones(self.n_events, dtype=np.int8)
        matrix = sp.coo_matrix((ones, (self.shopper, self.item)), shape=shape).tocsr()
        matrix.sum_duplicates()
        matrix.data[:] = 1
        return matrix

    def select(self, shoppers: np.ndarray) -> Interactions:
        """The events of these shoppers (codes into this set), renumbered 0..len(shoppers)-1 in the given order."""
        shoppers = np.asarray(shoppers, dtype=np.int64)
        ptr = self.indptr()
        parts = [np.arange(ptr[s], ptr[s + 1]) for s in shoppers]
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        new_code = np.repeat(np.arange(shoppers.size, dtype=np.int32), [p.size for p in parts])
        return Interactions(
            n_shoppers=int(shoppers.size),
            n_items=self.n_items,
            shopper=new_code,
            item=self.item[rows],
            event_type=self.event_type[rows],
            weight=self.weight[rows],
            age_days=self.age_days[rows],
        )

    @classmethod
    def empty(cls, n_shoppers: int, n_items: int) -> Interactions:
        return cls(
            n_shoppers=n_shoppers,
            n_items=n_items,
            shopper=np.zeros(0, dtype=np.int32),
            item=np.zeros(0, dtype=np.int32),
            event_type=np.zeros(0, dtype=np.int8),
            weight=np.zeros(0, dtype=np.float32),
            age_days=np.zeros(0, dtype=np.float32),
        )


@dataclass
class ItemFeatures:
    """What is known of every catalog item without any event: enough to score a brand-new product.

    Missing values: unknown category / brand / price band get code 0; a missing price gets the catalog's
    median log price (price_z 0); a missing created date counts as age 0 (new). Popularity is from the
    training events only (0 for cold items).
    """

    item_ids: list[str]
    category: np.ndarray  # int32, 0 = unknown, else 1..n_categories
    brand: np.ndarray  # int32, 0 = unknown, else 1..n_brands
    price_z: np.ndarray  # float32, standardized log1p(price)
    price_band: np.ndarray  # int32, 0 = unknown, else 1..N_PRICE_BANDS (quantiles of the catalog's prices)
    popularity: np.ndarray  # float32, log1p(distinct shoppers in the training data), standardized
    age_days: np.ndarray  # float32, days between created date and the reference moment (>= 0)
    text: list[str]  # name + description, raw (models tokenize)
    categories: list[str] = field(default_factory=list)  # code - 1 -> category name
    brands: list[str] = field(default_factory=list)  # code - 1 -> brand name

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @property
    def n_brands(self) -> int:
        return len(self.brands)


@dataclass
class EvalSet:
    """Shoppers to evaluate: their history before the cut (rows of `history`) and the items they went on to.

    `targets[s]` holds the distinct items shopper s interacted with after the cut and never before it:
    a for_you list is for discovery, so items already in the history are masked for every candidate alike.
    """

    history: Interactions
    targets: list[np.ndarray]
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))  # items with no train events

    @property
    def n_shoppers(self) -> int:
        return self.history.n_shoppers

    def sample(self, max_shoppers: int, seed: int = 0) -> EvalSet:
        """At most `max_shoppers` of these shoppers (deterministic), for searches that score many variants."""
        if self.n_shoppers <= max_shoppers:
            return self
        rows = np.sort(np.random.default_rng(seed).choice(self.n_shoppers, size=max_shoppers, replace=False))
        return EvalSet(
            history=self.history.select(rows),
            targets=[self.targets[int(r)] for r in rows],
            cold_items=self.cold_items,
        )


class Recommender(ABC):
    """One candidate. Subclasses set `name` and implement fit / score / save / load.

    `score` must work from numpy after `load` (no TensorFlow), for any batch of shoppers, including shoppers
    and history events never seen in training, and for every item in the `ItemFeatures` it was fit or loaded with.
    """

    name: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    @abstractmethod
    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Learn from `train`; returns stats worth recording (epochs run, seconds, sizes...)."""

    @abstractmethod
    def score(self, history: Interactions) -> np.ndarray:
        """Dense float32 scores, history.n_shoppers x n_items; higher is better. Callers batch shoppers.

        Always a new array the caller owns: evaluation and precompute mask the cells they leave out in place."""

    def shared_scores(self) -> np.ndarray | None:
        """The item scores every shopper gets, when they do not depend on the shopper (popularity), else None.

        Evaluation and precompute then rank that one vector once and walk it past each shopper's seen or bought
        items, instead of ranking a shoppers x items copy of it: at 200,000 products that was two seconds per
        candidate and evaluation set. A model that returns a vector here must not override `score_for_lists`."""
        return None

    def score_for_lists(
        self, history: Interactions, exclude: sp.spmatrix | None, allowed: np.ndarray | None
    ) -> np.ndarray:
        """`score` for lists that leave out `exclude` and keep to `allowed` (precompute's for_you lists leave out
        bought and inactive products only, where evaluation leaves out everything seen). Only a model that places
        an item at a list position (the new products' slot) needs to know which items the list will hold."""
        return self.score(history)

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the fitted state into `directory` (exists, empty): .npz / .json / .keras only, never pickle."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, features: ItemFeatures) -> Recommender:
        """Rebuild a fitted recommender from `save`'s files, re-aligned to `features` (match by product id).

        `features` may be a newer catalog than the one fitted on: products it adds are scored from their
        features by models that can (the neural one) and get score 0 from the others; removed ones vanish.
        """

    # Helpers every subclass may use.
    def _write_params(self, directory: Path, extra: dict[str, Any] | None = None) -> None:
        payload = {"name": self.name, "params": self.params, **(extra or {})}
        (Path(directory) / "params.json").write_text(json.dumps(payload, indent=2, sort_keys=True))

    @staticmethod
    def _read_params(directory: Path) -> dict[str, Any]:
        return json.loads((Path(directory) / "params.json").read_text())

    @classmethod
    def _from_params(cls, directory: Path) -> tuple[Self, dict[str, Any]]:
        """A model built with the parameters `save` recorded, and all of params.json for the rest of `load`."""
        stored = cls._read_params(directory)
        return cls(**stored["params"]), stored
