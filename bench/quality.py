"""Recommendation quality benchmark: every candidate side by side on one temporal split per data set.

    .venv/bin/python bench/quality.py [--datasets small,medium,public] [--split auto|global|per_shopper|both]
                                      [--seed 0] [--out FILE]

For each data set (bench/quality_data.py: the shop's own generator at two sizes, and MovieLens-100k from a PyPI
wheel), one split by `engine.split.decide_split` with the engine's settings (VALIDATION_FRACTION, TEST_FRACTION,
MAX_EVAL_SHOPPERS; the mode is --split, default the SPLIT setting, "auto" deciding from the data), then:

- every configured candidate (the CANDIDATES setting: popularity, trending, item-kNN, EASE, EASE with recency-
  weighted history, the neural model), each built by `engine.candidates.build_candidate` exactly as a retrain
  builds it, fitted on the training part (the validation set is given to `fit`, as in a retrain);
- implicit ALS (the `implicit` package, dev-only) as an outside reference: a small bench-only Recommender whose
  factors, regularization and alpha are picked from a small grid by validation NDCG@10;
- the engine's pick: `training.runs.choose` over the candidates' validation scores (the best one, or a blend of
  the best few when that scores higher), i.e. what a retrain would serve.

Under each table, the pick's test NDCG@10 minus the best baseline's (and the best other row's) with the paired
standard error. `--split both` runs each data set under both modes and adds a cross-check: each mode's pick, as a
recipe (components and weights), refit on the other mode's train part and scored on its test set; and the default
settings: the recipe SPLIT="auto" serves, on both modes' test sets, against each one's best baseline and own pick.

Every row is measured on the TEST shoppers with `engine.metrics.evaluate` (k=10, history items masked): NDCG,
Recall, HR, MRR, catalog coverage of the top-10 lists, recall on items without training events (cold), and the
seconds `fit` took. Item popularity features come from the training part only. Markdown tables go to stdout (and
to --out), ready for docs/benchmarks.md; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # quality_data, run as a script from the repo root
import quality_data

ROOT = quality_data.ROOT
K = 10
# The rows the engine's pick must beat (the quality bar): the numpy baselines and the outside reference.
BASELINES = ("popularity", "trending", "item_knn", "ease", "ease_recency", "implicit ALS (reference)")
ALS_GRID: list[dict[str, float]] = [
    {"factors": 64, "regularization": 0.05, "alpha": alpha, "iterations": 15} for alpha in (1.0, 5.0, 20.0)
]


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- implicit ALS, wrapped as a Recommender -------------------------------------------------------------------------


def _als_class() -> type:
    from recommendations.engine.base import EvalSet, Interactions, ItemFeatures, ProgressCallback, Recommender

    class ImplicitALS(Recommender):
        """implicit's ALS on the engine's shopper x item matrix; shoppers are folded in from their history.

        Scoring solves each scored shopper's factors exactly from their history row (implicit's
        `recalculate_user`, the least-squares step of ALS with the item factors fixed), so shoppers and events
        the fit never saw are scored like any other. Bench only: not a candidate, never served.
        """

        name: ClassVar[str] = "implicit_als"

        def __init__(
            self,
            factors: int = 64,
            regularization: float = 0.05,
            alpha: float = 5.0,
            iterations: int = 15,
            history_half_life_days: float | None = None,
            seed: int = 0,
        ) -> None:
            super().__init__(
                factors=factors,
                regularization=regularization,
                alpha=alpha,
                iterations=iterations,
                history_half_life_days=history_half_life_days,
                seed=seed,
            )
            self.model: Any = None

        def fit(
            self,
            train: Interactions,
            features: ItemFeatures,
            validation: EvalSet | None = None,
            on_progress: ProgressCallback | None = None,
        ) -> dict[str, Any]:
            from implicit.cpu.als import AlternatingLeastSquares
            from threadpoolctl import threadpool_limits

            p = self.params
            started = time.perf_counter()
            # implicit runs its own 2 threads; BLAS threads on top of them only contend for the 2 cores.
            with threadpool_limits(1, "blas"):
                self.model = AlternatingLeastSquares(
                    factors=int(p["factors"]),
                    regularization=float(p["regularization"]),
                    alpha=float(p["alpha"]),
                    iterations=int(p["iterations"]),
                    num_threads=2,
                    random_state=int(p["seed"]),
                )
                self.model.fit(train.matrix(p["history_half_life_days"]), show_progress=False)
            return {"seconds": time.perf_counter() - started}

        def score(self, history: Interactions) -> np.ndarray:
            matrix = history.matrix(self.params["history_half_life_days"])
            users = self.model.recalculate_user(np.arange(matrix.shape[0]), matrix)
            return np.asarray(users @ self.model.item_factors.T, dtype=np.float32)

        def save(self, directory: Path) -> None:
            np.savez(Path(directory) / "model.npz", item_factors=self.model.item_factors)
            self._write_params(directory)

        @classmethod
        def load(cls, directory: Path, features: ItemFeatures) -> Recommender:
            raise NotImplementedError("the bench's ALS is never saved for serving")

    return ImplicitALS


# ---- metrics -------------------------------------------------------------------------------------------------------


def evaluate_test(recommender: Any, evalset: Any) -> dict[str, Any]:
    """`engine.metrics.evaluate` (the same batches, masking, top-k and accumulator), plus NDCG's standard error.

    The standard error (sd of per-shopper NDCG / sqrt(shoppers)) says which differences a table can resolve:
    on MovieLens' 90 test shoppers (global split) it is several hundredths. "per_shopper" keeps each test shopper's
    NDCG, in the evaluation set's order, for paired comparisons between rows.
    """
    from recommendations.engine.metrics import MetricAccumulator, eval_batches, top_k

    n_items = evalset.history.n_items
    acc = MetricAccumulator(K, n_items, n_items, evalset.cold_items)
    per_shopper: list[float] = []
    for codes, history, seen in eval_batches(evalset, 1000):
        lists = top_k(recommender.score(history), K, exclude=seen)
        targets = [evalset.targets[c] for c in codes]
        acc.add(lists, targets)
        for row, target in zip(lists, targets, strict=True):
            if len(target):
                hit = np.isin(row, target) & (row >= 0)
                per_shopper.append(float(acc.discount[hit].sum() / acc.ideal[min(K, len(target)) - 1]))
    n = len(per_shopper)
    result: dict[str, Any] = acc.result()
    result["ndcg_se"] = float(np.std(per_shopper, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    result["per_shopper"] = np.asarray(per_shopper)
    if n and abs(float(np.mean(per_shopper)) - result["ndcg"]) > 1e-9:
        raise AssertionError("per-shopper NDCG disagrees with the engine's accumulator")
    return result


# ---- one data set ---------------------------------------------------------------------------------------------------


def _row(
    label: str, test: dict[str, float] | None, valid: dict[str, float] | None, seconds: float | None, note: str = ""
) -> dict[str, Any]:
    return {"label": label, "test": test, "valid": valid, "seconds": seconds, "note": note}


def run_dataset(data: quality_data.BenchData, seed: int, candidates: list[str], split_mode: str) -> dict[str, Any]:
    """Split, fit every candidate and ALS, ask the engine for its pick; test metrics for each."""
    from recommendations.conf import rec_settings
    from recommendations.engine.candidates import build_candidate
    from recommendations.engine.metrics import evaluate
    from recommendations.training.runs import CandidateResult, class_params

    started = time.perf_counter()
    split, decision = quality_data.split(data, split_mode, seed)
    features = data.features(popularity_from=split.train)
    log(f"{data.name}: split {split.stats()}")
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    half_life = float(rec_settings.RECENCY_HALF_LIFE_DAYS)
    for name in candidates:
        log(f"{data.name}: fit {name}")
        try:
            params = class_params({"seed": seed})
            params["ease_lowrank"] = {"seed": seed}  # measured where exact EASE runs too, to compare the two
            recommender = build_candidate(name, half_life, params)
            t0 = time.perf_counter()
            fit_stats = recommender.fit(split.train, features, split.validation, None) or {}
            fit_seconds = time.perf_counter() - t0
        except Exception as exc:  # a candidate that cannot run here (module not landed, catalog too big) is a row
            log(f"{data.name}: {name} left out: {type(exc).__name__}: {exc}")
            rows.append(_row(name, None, None, None, f"not run: {type(exc).__name__}: {exc}"))
            continue
        valid = evaluate(recommender, split.validation, k=K)
        test = evaluate_test(recommender, split.test)
        results[name] = CandidateResult(name, recommender, valid, fit_stats, round(fit_seconds, 3), test)
        note = ""
        if "epochs_run" in fit_stats:
            note = f"{fit_stats['epochs_run']} epochs, best {fit_stats.get('best_epoch')}"
            note += f", stopped: {fit_stats['stopped']}" if fit_stats.get("stopped") else ""
        rows.append(_row(name, test, valid, fit_seconds, note))
        log(f"{data.name}: {name} valid ndcg {valid['ndcg']:.4f} test ndcg {test['ndcg']:.4f} ({fit_seconds:.1f} s)")

    rows.append(_als_row(data.name, split, features, seed))

    # ---- the engine's pick ------------------------------------------------------------------------------------------
    # What a retrain would serve: training.runs.choose over the same candidates' validation scores. Its fit
    # seconds are the components' plus the blend weight search. (Lead: if choose's signature changes, wire it here.)
    choice = None
    try:
        from recommendations.training.runs import choose

        t0 = time.perf_counter()
        choice = choose(results, split, bool(rec_settings.BLEND), features=features)
        for note in choice.notes:
            for tried in note.get("tried", []) if note["rule"] == "cold_slot" else []:
                log(f"{data.name}: cold slot {tried}")
        pick_seconds = time.perf_counter() - t0 + sum(results[c].seconds for c in choice.components)
        test = evaluate_test(choice.recommender, split.test)
        weights = ", ".join(f"{c} {w:.2f}" for c, w in zip(choice.components, choice.weights, strict=True))
        rules = "; ".join(_rule(note) for note in choice.notes)
        note = weights + (f" ({rules})" if rules else "")
        rows.append(_row(f"**engine pick**: {choice.name}", test, choice.validation, pick_seconds, note))
    except Exception as exc:
        log(f"{data.name}: engine pick failed: {type(exc).__name__}: {exc}")
        rows.append(_row("**engine pick**", None, None, None, f"not run: {type(exc).__name__}: {exc}"))
    return {
        "data": data,
        "split": {**split.stats(), **history_gap(split.validation), "decision": decision.as_dict()},
        "rows": rows,
        "versus": versus(rows),
        "seconds": time.perf_counter() - started,
        # For the cross-check (not printed): the split itself, the fitted candidates and the engine's choice.
        "split_obj": split,
        "features": features,
        "results": results,
        "choice": choice,
    }


def _rule(note: dict[str, Any]) -> str:
    """One of `choose`'s notes, short, for the pick row."""
    if note["rule"] == "no_blend_small_sample":
        return f"no blend: {note['shoppers']} validation shoppers < {note['min_shoppers']}"
    if note["rule"] == "simpler_within_noise":
        return f"{note['best']} leads by {note['lead']:+.4f} ± {note['se']:.4f}: within noise"
    if note["rule"] == "cold_slot":
        if not note.get("scout"):
            return f"no slot for new products ({note['reason']})"
        return (
            f"slot {note['position']} for {note['scout']}'s best new product: validation cold recall "
            f"{note['cold_recall']:.4f}, costing {note['cost']:.4f} NDCG@10"
        )
    verdict = "serves" if note["rule"] == "blend_leads" else "within noise"
    return f"{note['blend']} vs {note['over']} {note['lead']:+.4f} ± {note['se']:.4f}: {verdict}"


def default_check(reports: dict[str, dict[str, Any]], data: quality_data.BenchData, seed: int) -> str:
    """The default settings (SPLIT="auto"): the recipe a retrain would serve, on both modes' test sets.

    Auto takes one mode's split, so its pick is that mode's pick; scored on the other mode's test set it is refit on
    that mode's train part (like the cross-check). Each line: the recipe's test NDCG@10, the best baseline's (and
    the ratio the issue's bar asks >= 1.05 of), and that mode's own pick with the paired difference.
    """
    from recommendations.training.runs import recipe_over

    _split, decision = quality_data.split(data, "auto", seed)
    default = reports[decision.mode].get("choice")
    if default is None:
        return "The default pick could not be made."
    weights = " + ".join(f"{w:.1f} {c}" for c, w in zip(default.components, default.weights, strict=True))
    if default.cold_slot:
        weights += f", slot {default.cold_slot['position']} for {default.cold_slot['scout']}'s best new product"
    lines = [
        f'SPLIT="auto" takes **{decision.mode}** ({decision.reason}: {decision.spanning_shoppers} validation '
        f"shoppers on the global cut, minimum {decision.min_shoppers}); the default recipe is {weights}.",
        "",
        "| scored on | default recipe NDCG@10 | cold recall@10 | best baseline | its NDCG@10 | ratio | "
        "that mode's pick | its NDCG@10 | its cold recall@10 | default - pick (paired SE) |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for mode, report in reports.items():
        results, own = report["results"], report.get("choice")
        if own is None or any(c not in results for c in default.components):
            continue
        if default.cold_slot and default.cold_slot["scout"] not in results:
            continue
        recipe = recipe_over(default, results, report["split_obj"].train, report["features"])
        evalset = report["split_obj"].test
        mine, theirs = evaluate_test(recipe, evalset), evaluate_test(own.recommender, evalset)
        baseline = max(
            (r for r in report["rows"] if r["test"] and r["label"] in BASELINES), key=lambda r: r["test"]["ndcg"]
        )
        diff = mine["per_shopper"] - theirs["per_shopper"]
        se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        lines.append(
            f"| {mode} test | {mine['ndcg']:.4f} ± {mine['ndcg_se']:.4f} | {_fmt(mine.get('cold_recall'))} "
            f"| {baseline['label']} | {baseline['test']['ndcg']:.4f} | {mine['ndcg'] / baseline['test']['ndcg']:.3f} "
            f"| {own.name} | {theirs['ndcg']:.4f} | {_fmt(theirs.get('cold_recall'))} | {diff.mean():+.4f} ± {se:.4f} |"
        )
    return "\n".join(lines)


def history_gap(evalset: Any) -> dict[str, float]:
    """How long before the evaluated moment each validation history ends: its newest event's age from the cut.

    Per shopper the cut is the first held-out event, so this tells whether validation asks for the rest of the
    session the history ends in (minutes) or for a later visit (days), as a global cut mostly does.
    """
    history = evalset.history
    if history.n_shoppers == 0:
        return {}
    ptr = history.indptr()
    newest = np.minimum.reduceat(history.age_days, ptr[:-1]) if history.n_events else np.zeros(0)
    return {
        "history_gap_median_days": round(float(np.median(newest)), 2),
        "history_gap_within_hour": round(float(np.mean(newest < 1 / 24)), 2),
    }


def cross_check(reports: dict[str, dict[str, Any]]) -> str:
    """Each mode's pick as a recipe, refit on the other mode's train part, on the other mode's test shoppers.

    Which split chooses better for serving is a question neither table answers alone, since each scores its own
    pick on its own kind of held-out events.
    """
    from recommendations.training.runs import recipe_over

    lines = [
        "| pick of | recipe | scored on | its NDCG@10 | that mode's own pick | its NDCG@10 | difference (paired SE) |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for source, target in (("global", "per_shopper"), ("per_shopper", "global")):
        mine, theirs = reports[source].get("choice"), reports[target].get("choice")
        results = reports[target]["results"]
        if mine is None or theirs is None or any(c not in results for c in mine.components):
            continue
        if mine.cold_slot and mine.cold_slot["scout"] not in results:
            continue
        recipe = recipe_over(mine, results, reports[target]["split_obj"].train, reports[target]["features"])
        evalset = reports[target]["split_obj"].test
        a, b = evaluate_test(recipe, evalset), evaluate_test(theirs.recommender, evalset)
        diff = a["per_shopper"] - b["per_shopper"]
        se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        weights = " + ".join(f"{w:.1f} {c}" for c, w in zip(mine.components, mine.weights, strict=True))
        if mine.cold_slot:
            weights += f", slot {mine.cold_slot['position']} for {mine.cold_slot['scout']}"
        lines.append(
            f"| {source} | {weights} | {target} test | {a['ndcg']:.4f} | {theirs.name} | {b['ndcg']:.4f} "
            f"| {diff.mean():+.4f} ± {se:.4f} |"
        )
    return "\n".join(lines)


def versus(rows: list[dict[str, Any]]) -> list[str]:
    """The pick's test NDCG@10 minus the best baseline's and the best other row's, ± the paired standard error.

    Paired: the same test shoppers score both rows, so the error of the difference is the sd of per-shopper
    differences / sqrt(shoppers), smaller than either row's own error when the rows agree on who is easy.
    """
    measured = [r for r in rows if r["test"]]
    pick = next((r for r in measured if r["label"].startswith("**engine pick**")), None)
    if pick is None:
        return []
    chosen = pick["label"].partition(": ")[2]  # a single candidate's own row is the same model: not "other"
    lines, compared = [], []
    for what, pool in (
        ("the best baseline", [r for r in measured if r["label"] in BASELINES]),
        ("the best other row", [r for r in measured if r is not pick and r["label"] != chosen]),
    ):
        if not pool:
            continue
        best = max(pool, key=lambda r: r["test"]["ndcg"])
        if best in compared:
            continue
        compared.append(best)
        diff = pick["test"]["per_shopper"] - best["test"]["per_shopper"]
        se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        z = abs(float(diff.mean())) / se if se else 0.0
        side = "above" if diff.mean() > 0 else "below" if diff.mean() < 0 else "equal"
        verdict = side + (", resolved" if z >= 2 else ", within noise")
        lines.append(
            f"Engine pick vs {what} ({best['label']}): {diff.mean():+.4f} ± {se:.4f} test NDCG@10 "
            f"(paired standard error; {z:.1f} SE: {verdict})."
        )
    return lines


def _als_row(dataset_name: str, split: Any, features: Any, seed: int) -> dict[str, Any]:
    """implicit ALS, its grid picked by validation NDCG@10; fit seconds of the chosen setting."""
    from recommendations.engine.metrics import evaluate

    try:
        als_class = _als_class()
    except ImportError as exc:
        return _row("implicit ALS", None, None, None, f"not run: {exc} (pip install -r requirements-dev.txt)")
    best: tuple[float, Any, dict[str, float], float, dict[str, float]] | None = None
    for params in ALS_GRID:
        model = als_class(**params, seed=seed)
        t0 = time.perf_counter()
        model.fit(split.train, features)
        seconds = time.perf_counter() - t0
        valid = evaluate(model, split.validation, k=K)
        log(f"{dataset_name}: implicit ALS {params} valid ndcg {valid['ndcg']:.4f} ({seconds:.1f} s)")
        if best is None or valid["ndcg"] > best[0]:
            best = (valid["ndcg"], model, params, seconds, valid)
    assert best is not None
    _, model, params, seconds, valid = best
    test = evaluate_test(model, split.test)
    note = f"{int(params['factors'])} factors, reg {params['regularization']:g}, alpha {params['alpha']:g}"
    return _row("implicit ALS (reference)", test, valid, seconds, note)


# ---- output ---------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(report: dict[str, Any], title: str | None = None) -> str:
    data: quality_data.BenchData = report["data"]
    s = data.stats
    split = report["split"]
    lines = [
        f"### {title or data.name}",
        "",
        f"Data: {data.source}.",
        f"{s['events']:,} training events from {s['shoppers']:,} shoppers on {s['items']:,} items "
        f"({s['items_with_events']:,} with events) over {s['days']} days; {split['mode']} split{_auto(split)}: "
        f"train {split['train_events']:,} events, validation {split['validation_shoppers']:,} shoppers, "
        f"test {split['test_shoppers']:,} shoppers "
        f"({split['test_targets']:,} target items); data {s['seconds']} s, models {report['seconds']:.0f} s. "
        f"A validation history ends a median {split.get('history_gap_median_days', 0):g} days before the moment "
        f"evaluated ({split.get('history_gap_within_hour', 0):.0%} within the hour).",
        "",
        "| model | valid NDCG@10 | NDCG@10 | Recall@10 | HR@10 | MRR@10 | coverage | cold recall@10 | fit s | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        t, v = row["test"] or {}, row["valid"] or {}
        cells = [
            row["label"],
            _fmt(v.get("ndcg")),
            _fmt(t.get("ndcg")) + (f" ± {t['ndcg_se']:.4f}" if "ndcg_se" in t else ""),
            _fmt(t.get("recall")),
            _fmt(t.get("hr")),
            _fmt(t.get("mrr")),
            _fmt(t.get("coverage"), 3),
            _fmt(t.get("cold_recall")),
            _fmt(row["seconds"], 1),
            row["note"].replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("versus"):
        lines += ["", *report["versus"]]
    return "\n".join(lines)


def _auto(split: dict[str, Any]) -> str:
    """What SPLIT="auto" saw, when it chose the mode."""
    decision = split.get("decision") or {}
    if decision.get("setting") != "auto":
        return ""
    if decision.get("spanning_shoppers") is None:
        return f" (auto, {decision['reason']})"
    return f" (auto, {decision['reason']}: {decision['spanning_shoppers']} shoppers span the global cut)"


def header(args: argparse.Namespace, command: str) -> str:
    import implicit
    import scipy

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "\n".join(
        [
            "## Recommendation quality",
            "",
            "```sh",
            command,
            "```",
            "",
            f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, seed {args.seed}. Machine: 2 cores, no GPU "
            f"({os.cpu_count()} CPUs visible, {cpu}); Python {platform.python_version()}, numpy {np.__version__}, "
            f"scipy {scipy.__version__}, implicit {implicit.__version__}.",
            f"Split: {args.split}. All metrics on the test shoppers (global split: the events after the test cut, "
            "the newest 10 % of all; per_shopper: each evaluated shopper's own newest 10 %), "
            "k = 10, items already in a shopper's history masked; NDCG is given ± its standard error over "
            "shoppers; *valid NDCG@10* is what the engine chooses by. *fit s* is `fit` alone (the engine "
            "pick: its components' fits plus the blend search).",
        ]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="small,medium,public", help="comma-separated: small, medium, public")
    parser.add_argument(
        "--split",
        choices=["auto", "global", "per_shopper", "both"],
        help="temporal split mode (default: the SPLIT setting); both: each mode, the cross-check and the default "
        "settings (what auto serves) on both modes' test sets",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator, split sampling and ALS seed")
    parser.add_argument("--candidates", help="comma-separated candidate names (default: the CANDIDATES setting)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    known = [*quality_data.GENERATED_SIZES, "public"]
    unknown = [d for d in args.datasets if d not in known]
    if unknown:
        parser.error(f"unknown data set(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    quality_data.setup_django()
    from recommendations.conf import rec_settings

    candidates = args.candidates.split(",") if args.candidates else list(rec_settings.CANDIDATES)
    args.split = args.split or str(rec_settings.SPLIT)
    command = ".venv/bin/python bench/quality.py " + " ".join(sys.argv[1:])
    started = time.perf_counter()
    sections = [header(args, command.strip())]
    modes = ["global", "per_shopper"] if args.split == "both" else [args.split]
    for name in args.datasets:
        log(f"{name}: loading")
        data = quality_data.load(name, args.seed)
        log(f"{name}: {data.stats}")
        reports = {}
        for mode in modes:
            reports[mode] = run_dataset(data, args.seed, candidates, mode)
            sections.append(table(reports[mode], title=f"{name}, {mode} split" if len(modes) > 1 else name))
            print(sections[-1] + "\n", file=sys.stderr, flush=True)
        if len(modes) > 1:
            sections.append(f"### {name}: cross-check\n\n{cross_check(reports)}")
            sections.append(f"### {name}: default settings\n\n{default_check(reports, data, args.seed)}")
            print("\n\n".join(sections[-2:]) + "\n", file=sys.stderr, flush=True)
        reports.clear()  # the fitted models of one data set are not needed for the next
    sections.append(f"Total wall time {time.perf_counter() - started:.0f} s.")
    markdown = "\n\n".join(sections) + "\n"
    print(markdown)
    if args.out:
        args.out.write_text(markdown)


if __name__ == "__main__":
    main()
