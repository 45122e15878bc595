"""When a list is asked: the same trained two-tower model, its lists computed at different moments before a return
visit, scored on the same shoppers' next events.

    .venv/bin/python bench/return_visit.py [--datasets public,small,medium] [--split global] [--seeds 0]

A stored list is computed at one moment and read at a later one. The two-tower model reads the time since the
shopper's newest event (`next_gap`), so the moment it is asked changes its answer. Per data set and split: the model
fitted as a retrain fits it, then validation and test NDCG@10 with each shopper asked at the true moment (the cut:
what `quality.py` measures), an hour before it (what the hourly precompute serves: every shopper asked at their age
when it ran), at their newest event (a list written right after their last event and never computed again), at the
shop's median time between visits (gaps over SESSION_MINUTES in the training part), at least that long after the
newest event, and at fixed moments.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_data

FIXED_HOURS = (24.0, 168.0)
PRECOMPUTE_HOURS = 1.0  # the default beat schedule's precompute interval


def newest_ages(history) -> np.ndarray:
    ptr = history.indptr()
    has = np.diff(ptr) > 0
    ages = np.zeros(history.n_shoppers)
    ages[has] = history.age_days[ptr[1:][has] - 1]
    return ages


def moments(ages: np.ndarray, gap: float) -> list[np.ndarray]:
    """The newest event's age each column asks at, from its age at the cut (the table's columns, in order)."""
    return [
        ages,
        np.maximum(ages - PRECOMPUTE_HOURS / 24.0, 0.0),
        np.zeros_like(ages),
        np.full_like(ages, gap),
        np.maximum(ages, gap),
        *[np.full_like(ages, hours / 24.0) for hours in FIXED_HOURS],
    ]


def asked(evalset, newest: np.ndarray):
    """The same histories with each shopper's newest event `newest` days old (all of their events moved alike, so
    the gaps between them stay)."""
    history = evalset.history
    ages = newest_ages(history)
    shift = np.repeat(newest - ages, np.diff(history.indptr()))
    moved = (history.age_days.astype(np.float64) + shift).astype(np.float32)
    return dataclasses.replace(evalset, history=dataclasses.replace(history, age_days=moved))


def median_return_gap(train, session_days: float) -> float:
    """The median gap between a shopper's consecutive events longer than a session, in days."""
    same = train.shopper[1:] == train.shopper[:-1]
    gaps = train.age_days[:-1].astype(np.float64) - train.age_days[1:]
    return float(np.median(gaps[same & (gaps > session_days)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="public,small,medium")
    parser.add_argument("--split", default="global")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    quality_data.setup_django()
    from recommendations.conf import rec_settings
    from recommendations.engine.candidates import build_candidate
    from recommendations.engine.metrics import evaluate
    from recommendations.training.runs import class_params

    session_days = float(rec_settings.SESSION_MINUTES) / 1440.0
    fixed = " | ".join(f"{h:g} h" for h in FIXED_HOURS)
    print(
        "| data | split | seed | set | median age (days) | true moment | an hour before | newest event | return gap | "
        f"at least the return gap | {fixed} |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(FIXED_HOURS))
    for name in [d for d in args.datasets.split(",") if d]:
        data = quality_data.load(name)
        for mode in [m for m in args.split.split(",") if m]:
            split, _ = quality_data.split(data, mode)
            features = data.features(popularity_from=split.train)
            gap = median_return_gap(split.train, session_days)
            for seed in [int(s) for s in args.seeds.split(",") if s]:
                started = time.perf_counter()
                half_life = float(rec_settings.RECENCY_HALF_LIFE_DAYS)
                model = build_candidate("neural", half_life, class_params({"seed": seed}))
                model.fit(split.train, features, split.validation, None)
                for label, evalset in (("validation", split.validation), ("test", split.test)):
                    at = moments(newest_ages(evalset.history), gap)
                    cells = [evaluate(model, asked(evalset, newest), k=10)["ndcg"] for newest in at]
                    median_age = float(np.median(newest_ages(evalset.history)))
                    print(
                        f"| {name} | {mode} | {seed} | {label} | {median_age:.1f} | "
                        + " | ".join(f"{c:.4f}" for c in cells)
                        + " |",
                        flush=True,
                    )
                print(
                    f"<!-- {name} {mode} seed {seed}: return gap {gap * 24:.1f} h, "
                    f"{time.perf_counter() - started:.0f} s -->",
                    flush=True,
                )


if __name__ == "__main__":
    main()
