"""Splitting interactions in time, never at random: train / validation / test, in one of two modes, or "auto"
(`decide_split`: global when at least MIN_EVAL_SHOPPERS shoppers span its cut, else per_shopper; the default).

**global**: two cuts on the time axis, placed so the newest `test_fraction` of events lies after the
test cut and the `valid_fraction` before it between the two. Everything a model fits on happens before the
validation cut; validation asks "from a shopper's history up to the cut, which new items did they go on to?" and the
test set asks the same at the later cut. No event after a cut can reach a model or a history scored at that cut.
Its cost: only shoppers active on both sides of a cut are evaluated, which on a data set whose shoppers come and go
(MovieLens: 943 users over seven months) leaves a few dozen.

**per_shopper**: each shopper's own newest events are held out. A shopper with n events keeps the newest
ceil(test_fraction·n) for test and the ceil(valid_fraction·n) before them for validation (at least one each), if at
least `min_train_events` remain before them; shoppers with less history stay in train whole and are never
evaluated. Train = every event older than its own shopper's validation part. The cuts follow event time, not
position, so events at the same moment stay on one side. Every active shopper is evaluated, but the classic
leave-last-out caveat applies: train holds *other* shoppers' events from after a shopper's cut (what was popular
later, items released later), which a live model could not have known. Held-out events never reach train, and no
shopper's own future reaches their history (tests check both).

Ages: histories scored at a cut are re-aged so the cut is "now" (per shopper in per_shopper mode), as a live
precompute at that moment would see them. Global train is re-aged from the validation cut; per_shopper train keeps
the data's own ages (its newest events are among it), the ages a refit on every event sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommendations.engine.base import EvalSet, Interactions, ItemFeatures

SPLIT_MODES = ("global", "per_shopper")
# The SPLIT setting: a mode, or "auto" (decide_split: global when enough shoppers span its cut, else per_shopper).
SPLIT_SETTINGS = ("auto", *SPLIT_MODES)
# per_shopper: a shopper is evaluated only with at least this many events before their held-out part.
MIN_TRAIN_EVENTS = 3
# The fewest evaluation shoppers that can rank candidates: with 500, the paired standard error of two candidates'
# NDCG@10 difference is about 0.005-0.007 on the sets we measured (MovieLens per shopper: 0.0051 over 884 shoppers;
# 0.022-0.028 over the 81 its global cut leaves), so a lead of about a tenth of a typical NDCG@10 of 0.1-0.2 is resolved
# at two errors. Below it a global cut says little, and no blend is chosen on it (training.runs.choose).
MIN_EVAL_SHOPPERS = 500


@dataclass
class Split:
    train: Interactions
    validation: EvalSet
    test: EvalSet
    # Age (days before the newest event) from which held-out events occur: every event older than this is in train.
    # Global: the validation cut. per_shopper: the earliest shopper's validation cut (train also holds newer events).
    valid_cut_days: float
    test_cut_days: float  # the same for the test part
    mode: str = "global"
    evaluable_shoppers: int | None = None  # per_shopper: shoppers with enough history to hold out

    def stats(self) -> dict[str, float | int | str]:
        stats: dict[str, float | int | str] = {
            "mode": self.mode,
            "train_events": self.train.n_events,
            "validation_shoppers": self.validation.n_shoppers,
            "validation_targets": int(sum(t.size for t in self.validation.targets)),
            "test_shoppers": self.test.n_shoppers,
            "test_targets": int(sum(t.size for t in self.test.targets)),
            "valid_cut_days": round(self.valid_cut_days, 3),
            "test_cut_days": round(self.test_cut_days, 3),
        }
        if self.evaluable_shoppers is not None:
            stats["evaluable_shoppers"] = self.evaluable_shoppers
        return stats


def _before(data: Interactions, cut_days: float | np.ndarray, reage: bool = True) -> Interactions:
    """Events strictly older than the cut (one for all, or one per event), re-aged so the cut is 'now'."""
    keep = data.age_days > cut_days
    age = data.age_days[keep]
    if reage:
        age = age - (cut_days[keep] if isinstance(cut_days, np.ndarray) else cut_days)
    return Interactions(
        n_shoppers=data.n_shoppers,
        n_items=data.n_items,
        shopper=data.shopper[keep],
        item=data.item[keep],
        event_type=data.event_type[keep],
        weight=data.weight[keep],
        age_days=age.astype(np.float32),
    )


def _eval_set(
    data: Interactions,
    history_cut: float | np.ndarray,
    target_from: float | np.ndarray,
    max_shoppers: int | None,
    seed: int,
) -> EvalSet:
    """Shoppers with history before `history_cut` and new items in (target_from, history_cut] days-ago.

    The cuts are one for everyone (global) or one per event, i.e. its shopper's (per_shopper); either way a
    history ends at its own shopper's cut and is aged from it.
    """
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


def shopper_cuts(
    data: Interactions, valid_fraction: float, test_fraction: float, min_train_events: int = MIN_TRAIN_EVENTS
) -> tuple[np.ndarray, np.ndarray]:
    """Per shopper, the ages of their validation and test cuts; -1 for shoppers too short to hold out.

    A shopper's test part is every event at most `test_cut` days old, the validation part those in
    (test_cut, valid_cut], train the older ones. A cut is the age of the first held-out event, so events at the
    same moment as it are held out with it.
    """
    ptr = data.indptr()
    counts = np.diff(ptr)
    if data.n_events and np.any((np.diff(data.age_days) > 0) & (np.diff(data.shopper) == 0)):
        raise ValueError("interactions must be sorted by shopper, then time (oldest first)")
    n_test = np.maximum(1, np.ceil(counts * test_fraction - 1e-9)).astype(np.int64)
    n_valid = np.maximum(1, np.ceil(counts * valid_fraction - 1e-9)).astype(np.int64)
    long_enough = counts - n_test - n_valid >= min_train_events
    valid_cut = np.full(data.n_shoppers, -1.0)
    test_cut = np.full(data.n_shoppers, -1.0)
    rows = np.flatnonzero(long_enough)
    ages = data.age_days.astype(np.float64)
    test_cut[rows] = ages[ptr[rows + 1] - n_test[rows]]
    valid_cut[rows] = ages[ptr[rows + 1] - n_test[rows] - n_valid[rows]]
    # Ties with the first held-out event go with it: count what is really left before the validation cut.
    older = np.bincount(data.shopper, weights=ages > valid_cut[data.shopper], minlength=data.n_shoppers)
    too_short = older < min_train_events
    valid_cut[too_short] = -1.0
    test_cut[too_short] = -1.0
    return valid_cut, test_cut


def temporal_split(
    data: Interactions,
    features: ItemFeatures | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_eval_shoppers: int | None = 5000,
    seed: int = 0,
    mode: str = "global",
    min_train_events: int = MIN_TRAIN_EVENTS,
) -> Split:
    """Cut `data` by event time into train / validation / test (see the module docstring for the two modes).

    `max_eval_shoppers` samples (deterministically) that many shoppers per evaluation set, which keeps the
    per-epoch validation of a 100k-shopper shop in seconds. `features` is accepted for symmetry and unused.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {mode!r}: one of {', '.join(SPLIT_MODES)}")
    if not 0 < valid_fraction < 1 or not 0 < test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction and test_fraction must be in (0, 1) and sum to less than 1")
    if data.n_events == 0:
        raise ValueError("no events to split")
    if mode == "per_shopper":
        return _per_shopper_split(data, valid_fraction, test_fraction, max_eval_shoppers, seed, min_train_events)
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


@dataclass
class SplitDecision:
    """Which mode `decide_split` took and why, as codes and counts (the training layer words them for people).

    reason: "setting" (a mode was configured), "enough_span" (at least `min_shoppers` shoppers span the global
    validation cut), "few_span" (fewer do: each shopper's own newest events are held out instead), or
    "no_global_cut" (the events span too little time for a global cut).
    """

    setting: str
    mode: str
    reason: str
    spanning_shoppers: int | None = None  # the global cut's validation shoppers (at most max_eval_shoppers)
    min_shoppers: int = MIN_EVAL_SHOPPERS

    def as_dict(self) -> dict[str, int | str | None]:
        return {
            "setting": self.setting,
            "mode": self.mode,
            "reason": self.reason,
            "spanning_shoppers": self.spanning_shoppers,
            "min_shoppers": self.min_shoppers,
        }


def decide_split(
    data: Interactions,
    setting: str = "auto",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_eval_shoppers: int | None = 5000,
    seed: int = 0,
    min_shoppers: int = MIN_EVAL_SHOPPERS,
) -> tuple[Split, SplitDecision]:
    """The split for the SPLIT setting: a named mode as is; "auto" decides from the data.

    Auto takes the global cut (it asks what a retrain serves into: the next period) when at least `min_shoppers`
    shoppers have a history before its validation cut and something new after it; with fewer, a ranking on them is
    mostly noise (see MIN_EVAL_SHOPPERS) and each shopper's own newest events are held out, which evaluates every
    shopper with enough history. Raises ValueError as `temporal_split` does when neither can split.
    """
    if setting not in SPLIT_SETTINGS:
        raise ValueError(f"unknown split mode {setting!r}: one of {', '.join(SPLIT_SETTINGS)}")

    def split(mode: str) -> Split:
        return temporal_split(
            data,
            valid_fraction=valid_fraction,
            test_fraction=test_fraction,
            max_eval_shoppers=max_eval_shoppers,
            seed=seed,
            mode=mode,
        )

    if setting != "auto":
        return split(setting), SplitDecision(setting, setting, "setting", min_shoppers=min_shoppers)
    try:
        global_split = split("global")
    except ValueError:
        return split("per_shopper"), SplitDecision(setting, "per_shopper", "no_global_cut", min_shoppers=min_shoppers)
    spanning = global_split.validation.n_shoppers
    # The set is sampled down to max_eval_shoppers: a cap below the minimum would otherwise never pass.
    if spanning >= min(min_shoppers, max_eval_shoppers or min_shoppers):
        return global_split, SplitDecision(setting, "global", "enough_span", spanning, min_shoppers)
    return split("per_shopper"), SplitDecision(setting, "per_shopper", "few_span", spanning, min_shoppers)


def _per_shopper_split(
    data: Interactions,
    valid_fraction: float,
    test_fraction: float,
    max_eval_shoppers: int | None,
    seed: int,
    min_train_events: int,
) -> Split:
    valid_cut, test_cut = shopper_cuts(data, valid_fraction, test_fraction, min_train_events)
    # Per event, its shopper's cuts; -1 (short shoppers) keeps every event before the cut and none after it.
    valid_at = valid_cut[data.shopper].astype(np.float32)
    test_at = test_cut[data.shopper].astype(np.float32)
    train = _before(data, valid_at, reage=False)
    validation = _eval_set(data, valid_at, test_at, max_eval_shoppers, seed)
    test = _eval_set(data, test_at, np.float32(-1.0), max_eval_shoppers, seed + 1)
    evaluable = valid_cut >= 0
    return Split(
        train=train,
        validation=validation,
        test=test,
        valid_cut_days=float(valid_cut[evaluable].max(initial=0.0)),
        test_cut_days=float(test_cut[evaluable].max(initial=0.0)),
        mode="per_shopper",
        evaluable_shoppers=int(evaluable.sum()),
    )
