"""Low-rank EASE (engine/lowrank.py) against exact EASE where EASE runs, and alone where it cannot.

    .venv/bin/python bench/lowrank.py quality [--datasets small,medium,public] [--split global,per_shopper]
                                              [--ranks 128,256] [--seed 0]
    .venv/bin/python bench/lowrank.py size [--products 200000] [--shoppers 100000] [--events 1000000]
                                           [--rank 256] [--seed 0]

`quality`: on each data set of bench/quality.py and each split mode, exact EASE and the low-rank EASE at each rank
(both with the candidates' recipes, l2 200, and the low-rank one's l2 picked on validation as a retrain does), every
row's test NDCG@10 and the paired difference to EASE with its standard error (the same test shoppers score both).

`size`: one `LowRankEASE.fit` on a synthetic 1M-event history over `--products` items (Zipf-like popularity within
40 categories, each shopper in one category), in a child process: fit seconds, the child's peak resident set
(VmHWM) and the seconds to score 1,000 shoppers. No database: the whole retrain at that size is bench/retrain.py
--products.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_data

K = 10


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b and its standard error (same shoppers, same order)."""
    diff = a - b
    se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()), se


def quality(args: argparse.Namespace) -> None:
    quality_data.setup_django()
    from quality import evaluate_test

    from recommendations.conf import rec_settings
    from recommendations.engine.baselines import EASE
    from recommendations.engine.lowrank import LowRankEASE
    from recommendations.engine.split import temporal_split

    print("| data | split | items | model | test NDCG@10 | vs EASE (paired SE) | valid NDCG@10 | fit s | notes |")
    print("|---|---|---:|---|---:|---:|---:|---:|---|")
    for name in args.datasets:
        data = quality_data.load(name, args.seed)
        for mode in args.split:
            split = temporal_split(
                data.interactions,
                valid_fraction=float(rec_settings.VALIDATION_FRACTION),
                test_fraction=float(rec_settings.TEST_FRACTION),
                max_eval_shoppers=int(rec_settings.MAX_EVAL_SHOPPERS),
                seed=args.seed,
                mode=mode,
            )
            features = data.features(popularity_from=split.train)
            models: list[tuple[str, Any]] = [("ease", EASE())]
            models += [(f"ease_lowrank rank {r}", LowRankEASE(rank=r, seed=args.seed)) for r in args.ranks]
            reference = None
            for label, model in models:
                started = time.perf_counter()
                stats = model.fit(split.train, features, split.validation)
                seconds = time.perf_counter() - started
                test = evaluate_test(model, split.test)
                from recommendations.engine.metrics import evaluate

                valid = evaluate(model, split.validation, k=K)["ndcg"]
                if reference is None:
                    reference, versus = test, "-"
                else:
                    diff, se = paired(test["per_shopper"], reference["per_shopper"])
                    versus = f"{diff:+.4f} ± {se:.4f}"
                note = f"l2 {stats['chosen']['l2']:g}" if "chosen" in stats else ""
                print(
                    f"| {name} | {mode} | {features.n_items:,} | {label} | {test['ndcg']:.4f} | {versus} "
                    f"| {valid:.4f} | {seconds:.1f} | {note} |",
                    flush=True,
                )


def synthetic(products: int, shoppers: int, events: int, seed: int) -> tuple[Any, Any]:
    """A 1M-event history over `products` items: each shopper in one of 40 categories, Zipf-like within it."""
    from recommendations.engine.base import Interactions, ItemFeatures

    rng = np.random.default_rng(seed)
    shopper = np.sort(rng.integers(0, shoppers, events)).astype(np.int32)
    per_category = -(-products // 40)
    popularity = 1.0 / np.arange(1, per_category + 1)
    rank = rng.choice(per_category, events, p=popularity / popularity.sum())
    item = ((rank * 40 + rng.integers(0, 40, shoppers)[shopper]) % products).astype(np.int32)
    interactions = Interactions(
        n_shoppers=shoppers,
        n_items=products,
        shopper=shopper,
        item=item,
        event_type=np.ones(events, dtype=np.int8),
        weight=np.ones(events, dtype=np.float32),
        age_days=np.zeros(events, dtype=np.float32),
    )
    zeros_i, zeros_f = np.zeros(products, dtype=np.int32), np.zeros(products, dtype=np.float32)
    features = ItemFeatures(
        [str(i) for i in range(products)], zeros_i, zeros_i, zeros_f, zeros_i, zeros_f, zeros_f, [""] * products
    )
    return interactions, features


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def size_child(args: argparse.Namespace) -> None:
    from recommendations.engine.lowrank import LowRankEASE

    interactions, features = synthetic(args.products, args.shoppers, args.events, args.seed)
    before = vm_hwm_mb()
    model = LowRankEASE(rank=args.rank, seed=args.seed)
    started = time.perf_counter()
    stats = model.fit(interactions, features)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    model.score(interactions.select(np.arange(1000)))
    score_seconds = time.perf_counter() - started
    print(
        json.dumps(
            {"fit_s": fit_seconds, "score_1000_s": score_seconds, "peak_mb": vm_hwm_mb(), "data_mb": before, **stats}
        )
    )


def size(args: argparse.Namespace) -> None:
    command = [sys.executable, __file__, "size", "--child", *sys.argv[2:]]
    env = {**os.environ, "PYTHONPATH": str(quality_data.ROOT)}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    load = os.getloadavg()
    print("| products | shoppers | events | rank | fit s | score 1,000 shoppers s | peak MB (data alone) | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| {args.products:,} | {args.shoppers:,} | {args.events:,} | {result['rank']} | {result['fit_s']:.1f} "
        f"| {result['score_1000_s']:.2f} | {result['peak_mb']:.0f} ({result['data_mb']:.0f}) "
        f"| {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["quality", "size"])
    parser.add_argument("--datasets", default="small,medium,public")
    parser.add_argument("--split", default="global,per_shopper")
    parser.add_argument("--ranks", default="128,256")
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--shoppers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.split = [s for s in args.split.split(",") if s]
    args.ranks = [int(r) for r in args.ranks.split(",") if r]
    if args.what == "quality":
        quality(args)
    elif args.child:
        size_child(args)
    else:
        size(args)


if __name__ == "__main__":
    main()
