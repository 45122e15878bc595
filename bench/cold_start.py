"""New products in the content candidate: what the validated lift of each shopper's best new product buys and costs.

    .venv/bin/python bench/cold_start.py [--datasets medium,public] [--split global] [--seed 0]

On each data set of bench/quality.py and split mode, the content candidate as a retrain fits it (beta, gamma and
the cold lift chosen on validation), and the same fit with the lift off (cold_boost 1: the calibrated prior alone):
test NDCG@10, the paired difference (same test shoppers) with its standard error, and cold recall@10 (recall on
test items that have no training events). The prior (engine.content.cold_prior) and the lift's validation search are
printed under the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_data
from lowrank import paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="medium,public")
    parser.add_argument("--split", default="global")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quality_data.setup_django()
    from quality import evaluate_test

    from recommendations.conf import rec_settings
    from recommendations.engine.content import ContentAffinity
    from recommendations.engine.split import temporal_split

    notes = []
    print("| data | split | content | test NDCG@10 | vs lift off (paired SE) | cold recall@10 | cold targets |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in [d for d in args.datasets.split(",") if d]:
        data = quality_data.load(name, args.seed)
        for mode in [m for m in args.split.split(",") if m]:
            split = temporal_split(
                data.interactions,
                valid_fraction=float(rec_settings.VALIDATION_FRACTION),
                test_fraction=float(rec_settings.TEST_FRACTION),
                max_eval_shoppers=int(rec_settings.MAX_EVAL_SHOPPERS),
                seed=args.seed,
                mode=mode,
            )
            features = data.features(popularity_from=split.train)
            half_life = float(rec_settings.RECENCY_HALF_LIFE_DAYS)
            off = ContentAffinity(history_half_life_days=half_life, cold_boost=1.0)
            off.fit(split.train, features, split.validation)
            lifted = ContentAffinity(history_half_life_days=half_life)
            stats = lifted.fit(split.train, features, split.validation)
            cold_targets = sum(
                int(sum(int(i in set(split.test.cold_items.tolist())) for i in t)) for t in split.test.targets
            )
            base = evaluate_test(off, split.test)
            for label, model in (("lift off", off), (f"lift {lifted.chosen['cold_boost']:g} (chosen)", lifted)):
                test = evaluate_test(model, split.test)
                versus = (
                    "-"
                    if model is off
                    else "{:+.4f} ± {:.4f}".format(*paired(test["per_shopper"], base["per_shopper"]))
                )
                print(
                    f"| {name} | {mode} | {label} | {test['ndcg']:.4f} | {versus} | {test['cold_recall']:.4f} "
                    f"| {cold_targets} |",
                    flush=True,
                )
            notes.append(f"- {name}, {mode}: prior {stats['cold_prior']}; lift search {stats.get('cold_boost_grid')}")
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
