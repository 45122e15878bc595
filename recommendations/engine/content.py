"""The content-based candidate: what a shopper likes (categories, brands, price bands) x what sells in each category.

score(shopper, item) = Σ_f beta_f · log P_shopper(f(item)) + gamma · log share(item | its category)

- P_shopper(f) is the shopper's recency- and type-weighted share of events per category (f = category), brand and
  price band, smoothed toward the shop-wide share with `alpha` pseudo-events, so one view does not rule out the rest.
- share(item | category) is the item's rate of distinct shoppers per day *since its first event* within its
  category: a product that arrived last week is not penalised for the weeks it was not for sale, which is where
  plain co-occurrence models under-rank new arrivals. A product with no events (brand new) gets `cold_share` of the
  category's mean rate, so it is recommended from its features alone.

Cheap (a few sparse products per batch of shoppers), numpy only, and with validation data `fit` picks beta and gamma
from a small grid by NDCG@10.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommendations.engine.base import (
    EvalSet,
    Interactions,
    ItemFeatures,
    ProgressCallback,
    Recommender,
    item_id_array,
    read_arrays,
)

FACETS = ("category", "brand", "price_band")
MODEL_FILE = "model.npz"
MIN_EXPOSURE_DAYS = 1.0
# (beta_category, beta_brand, beta_price_band) x gamma tried on validation; the first is the default without validation.
BETA_GRID = ((1.0, 0.2, 0.2), (1.0, 0.0, 0.0), (1.0, 0.5, 0.5))
GAMMA_GRID = (1.5, 1.0)
SEARCH_SHOPPERS = 1000  # validation shoppers the grid is scored on


def _facet_codes(features: ItemFeatures) -> dict[str, np.ndarray]:
    return {"category": features.category, "brand": features.brand, "price_band": features.price_band}


def _facet_names(features: ItemFeatures) -> dict[str, list[str]]:
    """Code -> name for each facet (code 0 is 'unknown'); bands are numbered, not named."""
    return {
        "category": ["", *features.categories],
        "brand": ["", *features.brands],
        "price_band": [str(i) for i in range(int(features.price_band.max(initial=0)) + 1)],
    }


class ContentAffinity(Recommender):
    name = "content"

    def __init__(
        self,
        alpha: float = 1.0,
        betas: tuple[float, float, float] | list[float] | None = None,
        gamma: float | None = None,
        history_half_life_days: float | None = 30.0,
        cold_share: float = 0.5,
    ) -> None:
        super().__init__(
            alpha=alpha,
            betas=list(betas) if betas is not None else None,
            gamma=gamma,
            history_half_life_days=history_half_life_days,
            cold_share=cold_share,
        )
        self.item_ids: list[str] = []
        self.codes: dict[str, np.ndarray] = {}
        self.prior: dict[str, np.ndarray] = {}
        self.log_share = np.zeros(0, dtype=np.float64)
        self.chosen: dict[str, Any] = {}
        self.names: dict[str, list[str]] = {}

    # ---- fitting ----------------------------------------------------------------------------------------------------

    def fit(
        self,
        train: Interactions,
        features: ItemFeatures,
        validation: EvalSet | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        n = features.n_items
        if train.n_items != n:
            raise ValueError(f"train has {train.n_items} items, features {n}")
        self.item_ids = list(features.item_ids)
        self.codes = {k: np.asarray(v, dtype=np.int64) for k, v in _facet_codes(features).items()}
        self.names = _facet_names(features)
        matrix = train.matrix(self.params["history_half_life_days"])
        item_mass = np.asarray(matrix.sum(axis=0)).ravel()
        for facet, codes in self.codes.items():
            size = max(int(codes.max(initial=0)) + 1, len(self.names[facet]))
            mass = np.bincount(codes, weights=item_mass, minlength=size) + 1.0
            self.prior[facet] = mass / mass.sum()
        self.log_share = self._category_shares(train, self.codes["category"], float(self.params["cold_share"]))
        stats: dict[str, Any] = {"seconds_base": round(time.monotonic() - started, 3)}
        if (
            validation is not None
            and validation.n_shoppers
            and (self.params["betas"] is None or self.params["gamma"] is None)
        ):
            from recommendations.engine.metrics import evaluate_scores

            grid = list(itertools.product(BETA_GRID, GAMMA_GRID))
            validation = validation.sample(SEARCH_SHOPPERS)
            results = []
            for step, (betas, gamma) in enumerate(grid):
                self.chosen = {"betas": list(betas), "gamma": gamma}
                results.append((evaluate_scores(self.score, validation)["ndcg"], step, betas, gamma))
                if on_progress is not None:
                    on_progress("content grid", step + 1, len(grid))
            best = max(results, key=lambda r: (r[0], -r[1]))
            self.chosen = {"betas": list(best[2]), "gamma": best[3]}
            stats["grid"] = [{"betas": list(b), "gamma": g, "ndcg": round(v, 4)} for v, _, b, g in results]
        else:
            self.chosen = {
                "betas": list(self.params["betas"] or BETA_GRID[0]),
                "gamma": float(self.params["gamma"] if self.params["gamma"] is not None else GAMMA_GRID[0]),
            }
        stats.update(chosen=self.chosen, seconds=round(time.monotonic() - started, 3))
        return stats

    @staticmethod
    def _category_shares(train: Interactions, category: np.ndarray, cold_share: float) -> np.ndarray:
        """log of each item's share of its category's exposure-normalized shopper rate."""
        n = category.shape[0]
        first_age = np.zeros(n, dtype=np.float64)
        if train.n_events:
            np.maximum.at(first_age, train.item, train.age_days.astype(np.float64))
        pairs = np.unique(train.shopper.astype(np.int64) * max(n, 1) + train.item)
        shoppers = np.bincount(pairs % max(n, 1), minlength=n).astype(np.float64)
        rate = shoppers / np.maximum(first_age, MIN_EXPOSURE_DAYS)
        log_share = np.zeros(n, dtype=np.float64)
        overall_median = float(np.median(rate[rate > 0])) if (rate > 0).any() else 1.0
        for code in np.unique(category):
            members = category == code
            r = rate[members]
            warm = r > 0
            # A product nobody has seen yet is, a priori, a `cold_share` of an average one of its category.
            typical = float(np.mean(r[warm])) if warm.any() else overall_median
            r = np.where(warm, r, cold_share * typical)
            log_share[members] = np.log(r / r.sum())
        return log_share

    # ---- scoring ----------------------------------------------------------------------------------------------------

    def score(self, history: Interactions) -> np.ndarray:
        if not self.item_ids:
            raise RuntimeError("ContentAffinity is not fitted")
        if history.n_items != len(self.item_ids):
            raise ValueError(f"history has {history.n_items} items, the model {len(self.item_ids)}")
        matrix = history.matrix(self.params["history_half_life_days"])
        alpha = float(self.params["alpha"])
        scores = np.zeros((history.n_shoppers, len(self.item_ids)), dtype=np.float32)
        for facet, beta in zip(FACETS, self.chosen["betas"], strict=True):
            if not beta:
                continue
            codes = self.codes[facet]
            size = self.prior[facet].shape[0]
            onehot = sp.csr_matrix(
                (np.ones(codes.size, dtype=np.float32), (np.arange(codes.size), codes)), shape=(codes.size, size)
            )
            mass = np.asarray((matrix @ onehot).todense(), dtype=np.float64)
            share = (mass + alpha * self.prior[facet]) / (mass.sum(axis=1, keepdims=True) + alpha)
            scores += (beta * np.log(share))[:, codes].astype(np.float32)
        scores += (float(self.chosen["gamma"]) * self.log_share).astype(np.float32)
        return scores

    # ---- persistence ------------------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        np.savez(
            directory / MODEL_FILE,
            item_ids=item_id_array(self.item_ids),
            log_share=self.log_share,
            **{f"codes_{k}": v for k, v in self.codes.items()},
            **{f"prior_{k}": v for k, v in self.prior.items()},
        )
        self._write_params(directory, {"chosen": self.chosen, "names": self.names})

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> ContentAffinity:
        directory = Path(directory)
        model, meta = cls._from_params(directory)
        model.chosen = meta["chosen"]
        trained_names: dict[str, list[str]] = meta["names"]
        saved = read_arrays(directory / MODEL_FILE)
        trained_ids = [str(x) for x in saved["item_ids"]]
        log_share = saved["log_share"]
        model.prior = {k: saved[f"prior_{k}"] for k in FACETS}
        # Facet codes follow sorted names, which shift when the catalog gains a category: map through the names.
        new_names = _facet_names(features)
        model.codes = {}
        for facet, codes in _facet_codes(features).items():
            lookup = {name: i for i, name in enumerate(trained_names[facet])}
            remap = np.array([lookup.get(name, 0) for name in new_names[facet]], dtype=np.int64)
            model.codes[facet] = remap[np.clip(np.asarray(codes, dtype=np.int64), 0, len(remap) - 1)]
        model.names = trained_names
        position = {pid: i for i, pid in enumerate(trained_ids)}
        model.item_ids = list(features.item_ids)
        shares = np.full(len(model.item_ids), np.nan)
        for i, pid in enumerate(model.item_ids):
            j = position.get(pid)
            if j is not None:
                shares[i] = log_share[j]
        # Products the model never saw: the cold share of their category's mean, as in fit.
        cold = np.isnan(shares)
        if cold.any():
            cat = model.codes["category"]
            known = ~cold
            fallback = float(np.median(log_share)) if log_share.size else 0.0
            for code in np.unique(cat[cold]):
                pool = shares[known & (cat == code)]
                typical = float(np.log(np.mean(np.exp(pool)))) if pool.size else fallback
                shares[cold & (cat == code)] = typical + np.log(float(model.params["cold_share"]))
        model.log_share = shares
        return model
