"""The content-based candidate: what a shopper likes (categories, brands, price bands) x what sells in each category.

score(shopper, item) = Σ_f beta_f · log P_shopper(f(item)) + gamma · log share(item | its category)

- P_shopper(f) is the shopper's recency- and type-weighted share of events per category (f = category), brand and
  price band, smoothed toward the shop-wide share with `alpha` pseudo-events, so one view does not rule out the rest.
- share(item | category) is the item's rate of distinct shoppers per day *since its first event* within its
  category: a product that arrived last week is not penalised for the weeks it was not for sale, which is where
  plain co-occurrence models under-rank new arrivals. A product with no events (brand new) gets the share of the
  category's mean rate that products new in the training data reached at its age (`cold_prior`, calibrated on them;
  `cold_share` where there is nothing to calibrate on), so it is recommended from its features alone.
- Each shopper's best product without events is lifted by `cold_boost`, the largest factor validation shows costs at
  most COLD_BOOST_TOLERANCE of NDCG@10: one slot, so new products are seen at a bounded, measured price.

Cheap (a few sparse products per batch of shoppers), numpy only, and with validation data `fit` picks beta and gamma
from a small grid by NDCG@10, then the lift.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
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


# The calibration of a new product's prior (cold_prior): a product's early rate is measured over its first
# horizon of days on sale (this share of the training span, at least a day, at most four weeks), and products are
# grouped by their age (days since their created date) when their first event came.
COLD_HORIZON_SHARE = 0.1
COLD_HORIZON_DAYS = (1.0, 28.0)
# Days. The first bucket is a month wide, so the shift between the catalog's clock (created dates are aged from the
# newest event of all the data) and a split's training part (aged from its cut) does not move newcomers out of it.
COLD_AGE_EDGES = (30.0, 120.0, 365.0, 1095.0)
COLD_PRIOR_SHOPPERS = 3.0  # pseudo-shoppers pulling a bucket with little evidence toward `cold_share`
# Each shopper's best product without events is lifted by the largest of these factors whose validation NDCG@10
# stays within COLD_BOOST_TOLERANCE of no lift: a new product is shown on its merit plus a bounded, measured lift.
COLD_BOOSTS = tuple(round(2 ** (k / 2), 3) for k in range(11))  # 1 to 32, steps of √2
COLD_BOOST_TOLERANCE = 0.005
COLD_BOOST_K = 10  # the list length the search measures (NDCG@10, as every candidate is chosen by)


@dataclass
class ColdPrior:
    """What share of its category's mean rate a product without events is expected to reach, by its age.

    `edges` (days) split products by their age; `shares[b]` is bucket b's share, `evidence[b]` the
    number of products it was measured on (0: the default `cold_share`).
    """

    edges: list[float]
    shares: list[float]
    evidence: list[int]

    def share(self, age_days: np.ndarray) -> np.ndarray:
        return np.asarray(self.shares, dtype=np.float64)[np.searchsorted(self.edges, age_days, side="left")]

    def as_dict(self) -> dict[str, Any]:
        return {"edges": self.edges, "shares": self.shares, "evidence": self.evidence}


def cold_prior(train: Interactions, created_age: np.ndarray, typical_rate: np.ndarray, default: float) -> ColdPrior:
    """Calibrate a new product's share of its category's mean rate on the products that were new in training.

    A product is new in the training window when its first event comes at least a horizon after the window opens.
    Its early rate (distinct shoppers in its first horizon of days, per day) over its category's mean rate says
    how a newcomer of that age fared; pooled per age bucket (its age at its first event) and shrunk toward
    `default`. A product without events is then expected to do what newcomers of its age did (its age now), so a
    shop whose new arrivals sell like its best sellers ranks them up there, and dead stock that has waited a year
    stays down, without a constant chosen by hand. Products without a created date (age 0 before their first
    event) say nothing about age and are left out.
    """
    created_age = np.asarray(created_age, dtype=np.float64)
    n = created_age.shape[0]
    edges = list(COLD_AGE_EDGES)
    if not train.n_events:
        return ColdPrior(edges=edges, shares=[default] * (len(edges) + 1), evidence=[0] * (len(edges) + 1))
    age = train.age_days.astype(np.float64)
    newest, oldest = float(age.min()), float(age.max())
    horizon = float(np.clip((oldest - newest) * COLD_HORIZON_SHARE, *COLD_HORIZON_DAYS))
    first = np.full(n, -np.inf)
    np.maximum.at(first, train.item, age)
    early = age >= first[train.item] - horizon
    pairs = np.unique(train.shopper[early].astype(np.int64) * max(n, 1) + train.item[early])
    shoppers = np.bincount(pairs % max(n, 1), minlength=n).astype(np.float64)
    days = np.maximum(np.minimum(first - newest, horizon), MIN_EXPOSURE_DAYS)
    age_at_first = created_age - first
    newcomer = (first <= oldest - horizon) & (first > newest) & (age_at_first >= 0)
    bucket = np.searchsorted(edges, age_at_first, side="left")
    shares, evidence = [], []
    for b in range(len(edges) + 1):
        members = newcomer & (bucket == b)
        expected = float((days[members] * typical_rate[members]).sum())
        observed = float(shoppers[members].sum())
        shares.append(round((observed + COLD_PRIOR_SHOPPERS * default) / (expected + COLD_PRIOR_SHOPPERS), 4))
        evidence.append(int(members.sum()))
    return ColdPrior(edges=edges, shares=shares, evidence=evidence)


def _insert(items: np.ndarray, scores: np.ndarray, item: int, score: float) -> np.ndarray:
    """A top-k list (item indices, -1 padded; their scores) with `item` moved to where `score` ranks it.

    Ties go to the lower item index, as metrics.top_k breaks them, so this is the list top_k would return.
    """
    keep = items != item
    items, scores = items[keep], scores[keep]
    ahead = (scores > score) | ((scores == score) & (items >= 0) & (items < item))
    position = int(ahead.sum())
    out = np.r_[items[:position], item, items[position:]]
    return out[: len(keep)]


def _same_arrays(kept: tuple[Any, ...], current: tuple[Any, ...]) -> bool:
    """Whether a cache was built from these very arrays (fit and load replace them, never change them in place)."""
    return all(a is b for a, b in zip(kept, current, strict=True))


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
        cold_boost: float | None = None,
    ) -> None:
        super().__init__(
            alpha=alpha,
            betas=list(betas) if betas is not None else None,
            gamma=gamma,
            history_half_life_days=history_half_life_days,
            cold_share=cold_share,
            cold_boost=cold_boost,
        )
        self.item_ids: list[str] = []
        self.codes: dict[str, np.ndarray] = {}
        self.prior: dict[str, np.ndarray] = {}
        self.log_share = np.zeros(0, dtype=np.float64)
        self.is_cold = np.zeros(0, dtype=bool)  # no training event: scored from the cold prior (and the boost)
        self.chosen: dict[str, Any] = {}
        self.names: dict[str, list[str]] = {}
        self.cold_prior = ColdPrior(edges=[], shares=[float(cold_share)], evidence=[0])
        self._combos: tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray] | None = None  # see _facet_combos
        self._cold_firsts: tuple[tuple[Any, ...], np.ndarray | None] | None = None  # see _cold_group_firsts

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
        self.log_share = self._category_shares(train, features)
        stats: dict[str, Any] = {
            "seconds_base": round(time.monotonic() - started, 3),
            "cold_prior": self.cold_prior.as_dict(),
        }
        if (
            validation is not None
            and validation.n_shoppers
            and (self.params["betas"] is None or self.params["gamma"] is None)
        ):
            from recommendations.engine.metrics import evaluate_scores

            grid = list(itertools.product(BETA_GRID, GAMMA_GRID))
            sample = validation.sample(SEARCH_SHOPPERS)
            results = []
            for step, (betas, gamma) in enumerate(grid):
                self.chosen = {"betas": list(betas), "gamma": gamma, "cold_boost": 1.0}
                results.append((evaluate_scores(self.score, sample)["ndcg"], step, betas, gamma))
                if on_progress is not None:
                    on_progress("content grid", step + 1, len(grid))
            best = max(results, key=lambda r: (r[0], -r[1]))
            self.chosen = {"betas": list(best[2]), "gamma": best[3], "cold_boost": 1.0}
            stats["grid"] = [{"betas": list(b), "gamma": g, "ndcg": round(v, 4)} for v, _, b, g in results]
        else:
            self.chosen = {
                "betas": list(self.params["betas"] or BETA_GRID[0]),
                "gamma": float(self.params["gamma"] if self.params["gamma"] is not None else GAMMA_GRID[0]),
                "cold_boost": 1.0,
            }
        if self.params["cold_boost"] is not None:
            self.chosen["cold_boost"] = float(self.params["cold_boost"])
        elif validation is not None and validation.n_shoppers and self.is_cold.any():
            stats["cold_boost_grid"] = self._choose_cold_boost(validation)
        stats.update(chosen=self.chosen, seconds=round(time.monotonic() - started, 3))
        return stats

    def _choose_cold_boost(self, validation: EvalSet) -> list[dict[str, float]]:
        """The largest COLD_BOOSTS factor whose validation NDCG@10 costs at most COLD_BOOST_TOLERANCE of no boost.

        Offline NDCG can only lose by showing products nobody could have chosen yet; a shop still has to show them
        to learn anything about them. This spends a bounded, measured part of the ranking on them, scored on every
        validation shopper. A cost within one paired standard error is no measured cost (a small validation set
        cannot tell it from noise), so it is allowed too; the search stops at the first factor that costs more.
        A boost moves one item per shopper, so each batch is scored once and every factor only re-inserts that
        item into the unboosted top 10 (a 200k-product catalog would otherwise be scored once per factor).
        """
        from recommendations.engine.metrics import MetricAccumulator, eval_batches, paired_difference, top_k

        k, n = COLD_BOOST_K, len(self.item_ids)
        accumulators = [MetricAccumulator(k, n, n, validation.cold_items) for _ in COLD_BOOSTS]
        gamma = float(self.chosen["gamma"])
        self.chosen["cold_boost"] = 1.0
        for codes, history, seen in eval_batches(validation, 1000):
            scores = self.score(history)
            lists = top_k(scores, k, exclude=seen)
            listed = np.where(lists >= 0, np.take_along_axis(scores, np.maximum(lists, 0), axis=1), -np.inf)
            rows, items = self._best_new(scores, history.matrix(self.params["history_half_life_days"]))
            targets = [validation.targets[c] for c in codes]
            for boost, accumulator in zip(COLD_BOOSTS, accumulators, strict=True):
                boosted = lists.copy()
                for row, item in zip(rows.tolist(), items.tolist(), strict=True):
                    boosted[row] = _insert(lists[row], listed[row], item, scores[row, item] + gamma * np.log(boost))
                accumulator.add(boosted, targets)
        tried: list[dict[str, float]] = []
        base = accumulators[0].per_shopper("ndcg")
        chosen = COLD_BOOSTS[0]
        for boost, accumulator in zip(COLD_BOOSTS, accumulators, strict=True):
            result = accumulator.result()
            diff, se = paired_difference(accumulator.per_shopper("ndcg"), base)
            tried.append(
                {"boost": boost, "ndcg": round(result["ndcg"], 5), "cold_recall": round(result["cold_recall"], 4)}
            )
            if -diff > max(COLD_BOOST_TOLERANCE * float(base.mean()), se):
                break
            chosen = boost
        self.chosen["cold_boost"] = float(chosen)
        return tried

    def _category_shares(self, train: Interactions, features: ItemFeatures) -> np.ndarray:
        """log of each item's share of its category's exposure-normalized shopper rate.

        A product nobody has seen yet gets its category's mean rate times the share `cold_prior` calibrates for
        its age (see there), so a new arrival ranks where new arrivals of that age have landed before.
        """
        category = self.codes["category"]
        n = category.shape[0]
        first_age = np.zeros(n, dtype=np.float64)
        if train.n_events:
            np.maximum.at(first_age, train.item, train.age_days.astype(np.float64))
        pairs = np.unique(train.shopper.astype(np.int64) * max(n, 1) + train.item)
        shoppers = np.bincount(pairs % max(n, 1), minlength=n).astype(np.float64)
        rate = shoppers / np.maximum(first_age, MIN_EXPOSURE_DAYS)
        self.is_cold = rate <= 0
        overall_median = float(np.median(rate[rate > 0])) if (rate > 0).any() else 1.0
        typical = np.full(n, overall_median)
        for code in np.unique(category):
            members = category == code
            warm = rate[members] > 0
            if warm.any():
                typical[members] = float(np.mean(rate[members][warm]))
        newest = float(train.age_days.min()) if train.n_events else 0.0
        self.cold_prior = cold_prior(
            train, np.asarray(features.age_days, dtype=np.float64), typical, float(self.params["cold_share"])
        )
        age_now = np.maximum(np.asarray(features.age_days, dtype=np.float64) - newest, 0.0)
        r = np.where(rate > 0, rate, typical * self.cold_prior.share(age_now))
        log_share = np.zeros(n, dtype=np.float64)
        for code in np.unique(category):
            members = category == code
            log_share[members] = np.log(r[members] / r[members].sum())
        return log_share

    # ---- scoring ----------------------------------------------------------------------------------------------------

    def score(self, history: Interactions) -> np.ndarray:
        if not self.item_ids:
            raise RuntimeError("ContentAffinity is not fitted")
        if history.n_items != len(self.item_ids):
            raise ValueError(f"history has {history.n_items} items, the model {len(self.item_ids)}")
        matrix = history.matrix(self.params["history_half_life_days"])
        alpha = float(self.params["alpha"])
        # The facets' terms are summed per (category, brand, price band) combination, which a catalog has far fewer
        # of than products, and spread over the items once: a 200,000-item batch is one gather and one addition
        # instead of three of each (the same float32 sums in the same order, so the same scores).
        combos, combo_of_item = self._facet_combos()
        table: np.ndarray | None = None  # shoppers x combinations
        for column, (facet, beta) in enumerate(zip(FACETS, self.chosen["betas"], strict=True)):
            if not beta:
                continue
            codes = self.codes[facet]
            size = self.prior[facet].shape[0]
            onehot = sp.csr_matrix(
                (np.ones(codes.size, dtype=np.float32), (np.arange(codes.size), codes)), shape=(codes.size, size)
            )
            mass = np.asarray((matrix @ onehot).todense(), dtype=np.float64)
            share = (mass + alpha * self.prior[facet]) / (mass.sum(axis=1, keepdims=True) + alpha)
            term = (beta * np.log(share)).astype(np.float32)[:, combos[:, column]]
            table = term if table is None else table + term
        if table is None:
            scores = np.zeros((history.n_shoppers, len(self.item_ids)), dtype=np.float32)
        else:
            scores = np.take(table, combo_of_item, axis=1)
        gamma = float(self.chosen["gamma"])
        scores += (gamma * self.log_share).astype(np.float32)
        boost = float(self.chosen.get("cold_boost", 1.0))
        if boost != 1.0:
            rows, items = self._best_new(scores, matrix)
            scores[rows, items] += np.float32(gamma * np.log(boost))
        return scores

    def _facet_combos(self) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct (category, brand, price band) code triples, each item's row in them), kept while `codes`
        holds the same arrays (fit and load replace them)."""
        arrays = tuple(self.codes[facet] for facet in FACETS)
        if self._combos is None or not _same_arrays(self._combos[0], arrays):
            stacked = np.stack(arrays, axis=1) if arrays[0].size else np.zeros((0, len(FACETS)), dtype=np.int64)
            combos, of_item = np.unique(stacked, axis=0, return_inverse=True)
            self._combos = (arrays, combos, of_item.reshape(-1))
        return self._combos[1], self._combos[2]

    def _best_new(self, scores: np.ndarray, matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """(rows, items): each shopper's best-scored product without training events, never one in their history.

        Only that one is lifted: one slot, not every newcomer of a category at once. Products alike in their
        facets and new-product share score alike, so the best of each such group (its lowest index, as argmax
        breaks ties) is searched instead of every new product: at 200,000 products, 90,000 of them new, reading
        all of them per batch was half of content's scoring time. A shopper with a new product in their history
        is searched the full way (the group's first may be the one they have).
        """
        from recommendations.engine.coldslot import best_new

        firsts = self._cold_group_firsts()
        if firsts is None or not firsts.size or not scores.shape[0]:
            return best_new(scores, self.is_cold, matrix)
        best = np.argmax(scores[:, firsts], axis=1)
        items = firsts[best]
        keep = np.isfinite(scores[np.arange(scores.shape[0]), items])
        csr = sp.csr_matrix(matrix)
        has_new = np.zeros(scores.shape[0], dtype=bool)
        has_new[np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))[self.is_cold[csr.indices]]] = True
        keep &= ~has_new
        rows, items = np.flatnonzero(keep), items[keep].astype(np.int64)
        if has_new.any():
            subset = np.flatnonzero(has_new)
            sub_rows, sub_items = best_new(scores[subset], self.is_cold, csr[subset])
            order = np.argsort(np.r_[rows, subset[sub_rows]], kind="stable")
            rows, items = np.r_[rows, subset[sub_rows]][order], np.r_[items, sub_items][order]
        return rows, items

    def _cold_group_firsts(self) -> np.ndarray | None:
        """The lowest-index new product of each group of new products with one (category, brand, price band) and
        one float32 share term, ascending; None when there are more than half as many groups as new products."""
        gamma = float(self.chosen["gamma"])
        _combos, combo_of_item = self._facet_combos()
        key = (gamma, self.log_share, self.is_cold, combo_of_item)
        cached = self._cold_firsts
        if cached is not None and cached[0][0] == gamma and _same_arrays(cached[0][1:], key[1:]):
            return cached[1]
        cold = np.flatnonzero(self.is_cold)
        term = (gamma * self.log_share[cold]).astype(np.float32)
        pairs = np.stack([combo_of_item[cold].astype(np.int64), term.view(np.int32).astype(np.int64)], axis=1)
        _unique, first = np.unique(pairs, axis=0, return_index=True)
        firsts = None if first.size * 2 > cold.size else np.sort(cold[first])
        self._cold_firsts = (key, firsts)
        return firsts

    # ---- persistence ------------------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        np.savez(
            directory / MODEL_FILE,
            item_ids=item_id_array(self.item_ids),
            log_share=self.log_share,
            is_cold=self.is_cold,
            **{f"codes_{k}": v for k, v in self.codes.items()},
            **{f"prior_{k}": v for k, v in self.prior.items()},
        )
        self._write_params(
            directory, {"chosen": self.chosen, "names": self.names, "cold_prior": self.cold_prior.as_dict()}
        )

    @classmethod
    def load(cls, directory: Path, features: ItemFeatures) -> ContentAffinity:
        directory = Path(directory)
        model, meta = cls._from_params(directory)
        model.chosen = meta["chosen"]
        if "cold_prior" in meta:  # artefacts from before the calibration keep the constant cold_share
            model.cold_prior = ColdPrior(**meta["cold_prior"])
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
        trained_cold = saved.get("is_cold", np.zeros(len(trained_ids), dtype=bool))
        model.is_cold = np.ones(len(model.item_ids), dtype=bool)
        for i, pid in enumerate(model.item_ids):
            j = position.get(pid)
            if j is not None:
                shares[i] = log_share[j]
                model.is_cold[i] = bool(trained_cold[j])
        # Products the model never saw: the calibrated share of their category's mean for their age, as in fit.
        cold = np.isnan(shares)
        if cold.any():
            cat = model.codes["category"]
            known = ~cold
            fallback = float(np.median(log_share)) if log_share.size else 0.0
            prior = np.log(model.cold_prior.share(np.asarray(features.age_days, dtype=np.float64)))
            for code in np.unique(cat[cold]):
                pool = shares[known & (cat == code)]
                typical = float(np.log(np.mean(np.exp(pool)))) if pool.size else fallback
                where = cold & (cat == code)
                shares[where] = typical + prior[where]
        model.log_share = shares
        return model
