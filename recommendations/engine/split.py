"""Splitting interactions in time, never at random: train / validation / test.

Two cuts on the time axis, placed so the newest `test_fraction` of events lies after the test cut and the
`valid_fraction` before it lies between the two. Everything a model fits on happens before the validation cut;
validation asks "from a shopper's history up to the cut, which new items did they go on to?" and the test set
asks the same at the later cut. So the last part of each active shopper's history is held out, and no event
after a cut can reach a model or a history scored at that cut (a test checks it). Ages are re-measured from
each cut, so recency weighting sees the same "now" a live precompute would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommendations.engine.base import EvalSet, Interactions, ItemFeatures


@dataclass
class Split:
    train: Interactions
    validation: EvalSet
    test: EvalSet
    valid_cut_days: float  # age (days before the newest event) of the validation cut
    test_cut_days: float

    def stats(self) -> dict[str, float | int]:
        return {
            "train_events": self.train.n_events,
            "validation_shoppers": self.validation.n_shoppers,
            "validation_targets": int(sum(t.size for t in self.validation.targets)),
            "test_shoppers": self.test.n_shoppers,
            "test_targets": int(sum(t.size for t in self.test.targets)),
            "valid_cut_days": round(self.valid_cut_days, 3),
            "test_cut_days": round(self.test_cut_days, 3),
        }


def _before(data: Interactions, cut_days: float) -> Interactions:
    """Events strictly older than the cut, re-aged so the cut is 'now'."""
    keep = data.age_days > cut_days
    return Interactions(
        n_shoppers=data.n_shoppers,
        n_items=data.n_items,
        shopper=data.shopper[keep],
        item=data.item[keep],
        event_type=data.event_type[keep],
        weight=data.weight[keep],
        age_days=(data.age_days[keep] - cut_days).astype(np.float32),
    )


def _eval_set(
    data: Interactions,
    history_cut: float,
    target_from: float,
    max_shoppers: int | None,
    seed: int,
) -> EvalSet:
    """Shoppers with history before `history_cut` and new items in (target_from, history_cut] days-ago."""
    history_all = _before(data, history_cut)
    window = (data.age_days <= history_cut) & (data.age_days > target_from) & (data.weight > 0)
    has_history = np.bincount(history_all.shopper, minlength=data.n_shoppers) > 0
    seen = history_all.seen().tocsr()
    targets_by_shopper: dict[int, np.ndarray] = {}
    w_shopper, w_item = data.shopper[window], data.item[window]
    if w_shopper.size:
        order = np.lexsort((w_item, w_shopper))
        w_shopper, w_item = w_shopper[order], w_item[order]
        starts = np.r_[0, np.flatnonzero(np.diff(w_shopper)) + 1]
        ends = np.r_[starts[1:], w_shopper.size]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            shopper = int(w_shopper[a])
            if not has_history[shopper]:
                continue
            items = np.unique(w_item[a:b])
            row = seen.indices[seen.indptr[shopper] : seen.indptr[shopper + 1]]
            new_items = np.setdiff1d(items, row, assume_unique=True)
            if new_items.size:
                targets_by_shopper[shopper] = new_items.astype(np.int32)
    shoppers = np.array(sorted(targets_by_shopper), dtype=np.int64)
    if max_shoppers is not None and shoppers.size > max_shoppers:
        rng = np.random.default_rng(seed)
        shoppers = np.sort(rng.choice(shoppers, size=max_shoppers, replace=False))
    trained_items = np.zeros(data.n_items, dtype=bool)
    trained_items[history_all.item] = True
    return EvalSet(
        history=history_all.select(shoppers),
        targets=[targets_by_shopper[int(s)] for s in shoppers],
        cold_items=np.flatnonzero(~trained_items).astype(np.int32),
    )


def temporal_split(
    data: Interactions,
    features: ItemFeatures | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_eval_shoppers: int | None = 5000,
    seed: int = 0,
) -> Split:
    """Cut `data` by event time into train / validation / test (see the module docstring).

    `max_eval_shoppers` samples (deterministically) that many shoppers per evaluation set, which keeps the
    per-epoch validation of a 100k-shopper shop in seconds. `features` is accepted for symmetry and unused.
    """
    if not 0 < valid_fraction < 1 or not 0 < test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction and test_fraction must be in (0, 1) and sum to less than 1")
    if data.n_events == 0:
        raise ValueError("no events to split")
    ages = data.age_days.astype(np.float64)
    test_cut = float(np.quantile(ages, test_fraction))
    valid_cut = float(np.quantile(ages, test_fraction + valid_fraction))
    if valid_cut <= test_cut:
        # All events at (nearly) one moment: nothing can be held out in time.
        raise ValueError("events span too little time to split into train, validation and test")
    train = _before(data, valid_cut)
    validation = _eval_set(data, valid_cut, test_cut, max_eval_shoppers, seed)
    test = _eval_set(data, test_cut, -1.0, max_eval_shoppers, seed + 1)
    return Split(train=train, validation=validation, test=test, valid_cut_days=valid_cut, test_cut_days=test_cut)
