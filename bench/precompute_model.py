"""Precompute-from-a-model benchmark: the for_you stage's scoring against a floor measured in the same run.

    .venv/bin/python bench/precompute_model.py [--size large] [--seed 7] [--fit-seconds 30] [--runs 1]
                                               [--write-db postgres://postgres@127.0.0.1:5432/rec_bench_pm]

Target: top-50 for 100,000 shoppers x 50,000 products in at most 2x a plain batched matmul + top-k over the same
embeddings, in at most 2 GB. No database is needed for the two measured paths:

1. *prepare* (a subprocess): the synthetic shop of bench/precompute.py (`--size`, same seed, same data as its
   PostgreSQL runs) turned into the engine's EventLog in memory, then exactly what precompute's for_you stage does
   before scoring: `dataset.clean_log`, `dataset.to_interactions`, `precompute._bought_by`, a `CatalogView` (2 % of
   products inactive, so the allowed mask has work to do) and `dataset.item_features`; saved as .npz.
2. *fit* (a subprocess): a NeuralRecommender trained for `--fit-seconds` (one epoch at most) and written with its
   own `save`; the measured processes read it back with `NeuralRecommender.load`, as precompute does.
3. *engine* (a subprocess per run): `model_lists.recommend_chunks(model, interactions, bought, active, 50,
   category_of_item)`, every chunk consumed, and every item touched as the list writer does (`_model_for_you`
   without the database). Timed per part through wrappers around the calls it makes.
4. *floor* (a subprocess per run): the numpy shopper tower over every shopper (`neural.last_events` +
   `neural.shopper_tower`), then per block of rows `U @ V.T`, `np.argpartition` for the top 50 and a sort of
   those 50: no masks, no reasons.
5. *write* (optional, `--write-db`): the engine path again, now adding each list to a RecommendationSet through
   precompute's `_ListWriter` (bulk_create batches of 1,000) in a migrated bench database; the set is deleted
   afterwards. Its seconds minus the engine's are the database writes.

Every step runs in its own process and this one holds no data, so *peak MB* is each process's own high-water
resident set (VmHWM from /proc/self/status at its end; data and model loading included, the same for both paths;
wait4's ru_maxrss is not used: Linux folds the spawning process's resident set into it at exec). *seconds* is the
timed section only (loading excluded). Results are kept in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    create_and_migrate,
    django_env,
    is_bench_database,
    peak_mb,
    print_footer,
    print_table,
    run_measured,
    setup_django,
    shopper_ids,
)
from precompute import EVENT_MIX, HISTORY_END, PRESETS, generate

TOP_N = 50
INACTIVE_SHARE = 0.02
DATA_FILE = "data.npz"
MODEL_DIR = "model"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=PRESETS, default="large", help="bench/precompute.py preset (default large)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    parser.add_argument("--fit-seconds", type=float, default=30.0, help="training budget of the neural model")
    parser.add_argument("--runs", type=int, default=1, help="engine + floor pairs to time (alternating)")
    parser.add_argument("--floor-rows", type=int, default=0, help="rows per floor matmul block (default: engine's)")
    parser.add_argument("--write-db", default="", help="also time the database writes into this (bench) database")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="kill a subprocess that runs longer")
    parser.add_argument("--child", choices=["prepare", "fit", "engine", "floor", "write"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_db and not is_bench_database(args.write_db):
        parser.error("--write-db must name a database whose name contains 'bench'")
    return args


# --- prepare: the shop as the for_you stage sees it -----------------------------------------------------------------


def prepare(size: str, seed: int, work: Path) -> dict[str, Any]:
    """Generate the shop and run the engine's own steps up to scoring; save the arrays for the subprocesses."""
    from recommendations.conf import rec_settings
    from recommendations.engine import cooccurrence, dataset
    from recommendations.engine.base import EVENT_TYPE_CODES
    from recommendations.lists.precompute import _bought_by

    started = time.perf_counter()
    shop = generate(PRESETS[size], seed)
    names = [name for name, _ in EVENT_MIX]
    weights = {k: float(v) for k, v in rec_settings.EVENT_WEIGHTS.items()}
    loaded = set(dataset.loaded_event_types(weights))
    type_name = np.array(names)[shop.event_type]
    keep = (shop.product >= 0) & np.isin(type_name, sorted(loaded))
    numbers, shopper_idx = np.unique(shop.shopper[keep], return_inverse=True)
    shoppers = [shopper_ids(int(n))[2] for n in numbers.tolist()]
    n_items = int(shop.product_category.size)
    item_ids = [f"{i + 1:06d}" for i in range(n_items)]  # zero-padded: string order is index order, as in the DB
    end_us = dataset.micros(HISTORY_END)
    kinds = type_name[keep]
    log = dataset.EventLog(
        shoppers=shoppers,
        items=item_ids,
        shopper_idx=shopper_idx.astype(np.int32),
        item_idx=shop.product[keep].astype(np.int32),
        type_weight=np.array([weights.get(k, 0.0) for k in names])[shop.event_type[keep]],
        is_purchase=kinds == "purchase",
        occurred_us=end_us - shop.seconds_before_end[keep].astype(np.int64) * 1_000_000,
        event_code=np.array([EVENT_TYPE_CODES.get(k, 0) for k in names], dtype=np.int8)[shop.event_type[keep]],
    )
    # What _model_for_you does before scoring.
    cleaned, cleaning = dataset.clean_log(
        log, float(rec_settings.BURST_SECONDS), int(rec_settings.BOT_MAX_EVENTS_PER_MINUTE)
    )
    interactions, shopper_keys = dataset.to_interactions(cleaned, reference_us=cleaned.newest_us)
    bought = _bought_by(cleaned, shopper_keys, n_items)
    rng = np.random.default_rng(seed + 1)
    active = rng.random(n_items) >= INACTIVE_SHARE
    catalog = cooccurrence.CatalogView.from_rows(
        (pid, f"cat-{c}", bool(a), True)
        for pid, c, a in zip(item_ids, shop.product_category.tolist(), active.tolist(), strict=True)
    )
    created = [HISTORY_END - timedelta(days=float(d)) for d in rng.uniform(0, 720, size=n_items)]
    rows = [
        (pid, f"Bench product {i + 1}", f"cat-{c}", f"brand-{(i + 1) % 97}", cents / 100, "", created[i])
        for i, (pid, c, cents) in enumerate(
            zip(item_ids, shop.product_category.tolist(), shop.price_cents.tolist(), strict=True)
        )
    ]
    reference = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(cleaned.newest_us or 0))
    features = dataset.item_features(rows, interactions, reference=reference)
    np.savez(
        work / DATA_FILE,
        n_shoppers=interactions.n_shoppers,
        n_items=interactions.n_items,
        shopper=interactions.shopper,
        item=interactions.item,
        event_type=interactions.event_type,
        weight=interactions.weight,
        age_days=interactions.age_days,
        bought_data=bought.data,
        bought_indices=bought.indices,
        bought_indptr=bought.indptr,
        active=catalog.active,
        category_of_item=catalog.category_of_item,
        f_item_ids=np.array(features.item_ids),
        f_category=features.category,
        f_brand=features.brand,
        f_price_z=features.price_z,
        f_price_band=features.price_band,
        f_popularity=features.popularity,
        f_age_days=features.age_days,
        f_text=np.array(features.text),
        f_categories=np.array(features.categories),
        f_brands=np.array(features.brands),
    )
    return {
        "events": interactions.n_events,
        "shoppers": interactions.n_shoppers,
        "products": n_items,
        "active": int(catalog.active.sum()),
        "purchases": int(bought.nnz),
        "cleaning": cleaning.as_dict(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def load_data(work: Path) -> dict[str, Any]:
    """The prepared arrays back as engine objects (Interactions, bought csr, masks, ItemFeatures)."""
    import scipy.sparse as sp

    from recommendations.engine.base import Interactions, ItemFeatures

    with np.load(work / DATA_FILE, allow_pickle=False) as z:
        d = {key: z[key] for key in z.files}
    n_shoppers, n_items = int(d["n_shoppers"]), int(d["n_items"])
    interactions = Interactions(
        n_shoppers=n_shoppers,
        n_items=n_items,
        shopper=d["shopper"],
        item=d["item"],
        event_type=d["event_type"],
        weight=d["weight"],
        age_days=d["age_days"],
    )
    bought = sp.csr_matrix((d["bought_data"], d["bought_indices"], d["bought_indptr"]), shape=(n_shoppers, n_items))
    features = ItemFeatures(
        item_ids=d["f_item_ids"].tolist(),
        category=d["f_category"],
        brand=d["f_brand"],
        price_z=d["f_price_z"],
        price_band=d["f_price_band"],
        popularity=d["f_popularity"],
        age_days=d["f_age_days"],
        text=d["f_text"].tolist(),
        categories=d["f_categories"].tolist(),
        brands=d["f_brands"].tolist(),
    )
    return {
        "interactions": interactions,
        "bought": bought,
        "active": d["active"],
        "category_of_item": d["category_of_item"],
        "features": features,
    }


# --- subprocesses ---------------------------------------------------------------------------------------------------


def child_fit(work: Path, fit_seconds: float) -> dict[str, Any]:
    """Train the neural model briefly on every event and save it the way a retrain's artefact is written."""
    from recommendations.engine.neural import NeuralRecommender

    data = load_data(work)
    # One model, as a retrain of this size trains (its first model takes the whole budget: no further `members`).
    model = NeuralRecommender(max_seconds=fit_seconds, epochs=1, members=1)
    stats = model.fit(data["interactions"], data["features"], None, None)
    (work / MODEL_DIR).mkdir(exist_ok=True)
    model.save(work / MODEL_DIR)
    return {key: stats[key] for key in ("seconds", "epochs_run", "steps", "stopped", "n_targets", "n_windows")}


def _load_model(work: Path, data: dict[str, Any]) -> Any:
    from recommendations.engine.neural import NeuralRecommender

    return NeuralRecommender.load(work / MODEL_DIR, data["features"])


class _Timer:
    """Seconds spent inside wrapped callables, by part name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - started

        return timed


def child_engine(work: Path, write_db: bool) -> dict[str, Any]:
    """recommend_chunks over every shopper, consuming each list as _model_for_you does (and writing, with write_db)."""
    from recommendations.engine import model_lists, neural

    data = load_data(work)
    model = _load_model(work, data)
    interactions = data["interactions"]
    ids = data["features"].item_ids
    shopper_names = [f"s{i}" for i in range(interactions.n_shoppers)]
    writer, new_set = None, None
    if write_db:
        from recommendations.lists.precompute import _ListWriter
        from recommendations.models import RecommendationSet

        new_set = RecommendationSet.objects.create(algorithm="bench precompute_model")
        writer = _ListWriter(new_set)

    # Wrappers around every call recommend_chunks makes, so the rest is its own gathers and row building.
    timer = _Timer()
    model_lists.top_k_scratch = timer.wrap("top_k (masks, partition, sort)", model_lists.top_k_scratch)
    model_lists._last_item_keys = timer.wrap("reason anchors", model_lists._last_item_keys)
    neural.shopper_vectors = timer.wrap("shopper tower", neural.shopper_vectors)
    model.score = timer.wrap("score (tower + matmul)", model.score)
    interactions.select = timer.wrap("select history", interactions.select)

    lists = items = 0
    started = time.perf_counter()
    consume = 0.0
    for rows in model_lists.recommend_chunks(
        model, interactions, data["bought"], data["active"], TOP_N, data["category_of_item"]
    ):
        part = time.perf_counter()
        for code, picked in rows:
            entries = [(ids[i], s, f"because:{ids[a]}" if a >= 0 else "for_you") for i, s, a in picked]
            if writer is not None:
                writer.add("for_you", shopper_names[code], entries)
            lists += 1
            items += len(entries)
        consume += time.perf_counter() - part
    if writer is not None:
        part = time.perf_counter()
        writer.flush()
        consume += time.perf_counter() - part
    seconds = time.perf_counter() - started - consume
    # The bought rows recommend_chunks slices per chunk, timed apart (inside, top_k slices the same matrix too).
    step = model_lists.chunk_rows(interactions.n_items)
    t0 = time.perf_counter()
    for start in range(0, interactions.n_shoppers, step):
        data["bought"][np.arange(start, min(start + step, interactions.n_shoppers))]
    parts = dict(timer.seconds)
    parts["exclude rows"] = time.perf_counter() - t0
    parts["tower"] = parts.pop("shopper tower")
    parts["matmul (rest of score)"] = parts.pop("score (tower + matmul)") - parts["tower"]
    parts["gathers + row building (rest)"] = seconds - sum(parts.values())
    if new_set is not None:
        from recommendations.lists.precompute import _delete_sets

        _delete_sets([new_set.pk])
    return {"seconds": seconds, "consume": consume, "lists": lists, "items": items, "parts": parts}


def child_floor(work: Path, rows_per_block: int) -> dict[str, Any]:
    """Shopper vectors for all shoppers, then blocked U @ V.T + argpartition top-50 (+ sorting the 50)."""
    from recommendations.engine import model_lists, neural

    data = load_data(work)
    model = _load_model(work, data)
    interactions = data["interactions"]
    weights, item_vectors = model.weights, model.item_vectors
    seq_len = int(model.config["seq_len"])
    n_shoppers, n_items = interactions.n_shoppers, interactions.n_items
    block = rows_per_block or model_lists.chunk_rows(n_items)
    k = min(TOP_N, n_items)
    parts = {"tower": 0.0, "matmul": 0.0, "argpartition + sort 50": 0.0}
    started = time.perf_counter()
    items, types, lengths = neural.last_events(interactions, seq_len)
    buckets = model.gap_buckets()
    asked = neural.asked_gaps(interactions, lengths, seq_len, buckets) if buckets else None
    shopper_vectors = np.empty((n_shoppers, item_vectors.shape[1]), dtype=np.float32)
    for start in range(0, n_shoppers, 4096):
        part = slice(start, start + 4096)
        vectors = np.where((items[part] >= 0)[:, :, None], item_vectors[np.maximum(items[part], 0)], 0.0)
        shopper_vectors[part] = neural.shopper_tower(
            weights,
            vectors.astype(np.float32),
            types[part],
            lengths[part],
            next_gaps=None if asked is None else asked[part],
        )
    parts["tower"] = time.perf_counter() - started
    best = np.empty((n_shoppers, k), dtype=np.int64)
    transposed = np.ascontiguousarray(item_vectors.T)
    for start in range(0, n_shoppers, block):
        t0 = time.perf_counter()
        scores = shopper_vectors[start : start + block] @ transposed
        t1 = time.perf_counter()
        top = np.argpartition(scores, n_items - k, axis=1)[:, n_items - k :]
        values = np.take_along_axis(scores, top, axis=1)
        best[start : start + block] = np.take_along_axis(top, np.argsort(-values, axis=1), axis=1)
        t2 = time.perf_counter()
        parts["matmul"] += t1 - t0
        parts["argpartition + sort 50"] += t2 - t1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "lists": n_shoppers, "items": int(best.size), "parts": parts, "block": block}


def run_child(mode: str, work: Path, args: argparse.Namespace, database_url: str = "") -> Any:
    """One step in its own process; without `database_url` it has none (the SQLite default, never opened)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--work", str(work)]
    command += ["--size", args.size, "--seed", str(args.seed), "--fit-seconds", str(args.fit_seconds)]
    command += ["--floor-rows", str(args.floor_rows)]
    result = run_measured(command, django_env(database_url), args.max_seconds)
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["wall"] = result.seconds
    return report


def child_main(args: argparse.Namespace) -> None:
    work = Path(args.work)
    setup_django()
    if args.child == "prepare":
        report = prepare(args.size, args.seed, work)
    elif args.child == "fit":
        report = child_fit(work, args.fit_seconds)
    elif args.child == "engine":
        report = child_engine(work, write_db=False)
    elif args.child == "write":
        report = child_engine(work, write_db=True)
    else:
        report = child_floor(work, args.floor_rows)
    print(json.dumps({**report, "peak_mb": peak_mb()}))


def main() -> int:
    args = parse_args()
    if args.child:
        child_main(args)
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pm-") as tmp:
        work = Path(tmp)
        print(f"preparing the {args.size} shop (seed {args.seed}) ...", file=sys.stderr)
        prepared = run_child("prepare", work, args)
        print(f"  {json.dumps(prepared)}", file=sys.stderr)
        print(f"fitting the neural model ({args.fit_seconds:g} s budget) ...", file=sys.stderr)
        fitted = run_child("fit", work, args)
        print(f"  {json.dumps(fitted)}", file=sys.stderr)
        measured: list[tuple[str, int, dict[str, Any]]] = []
        for run in range(1, args.runs + 1):
            for mode in ("engine", "floor"):
                print(f"{mode} (run {run}) ...", file=sys.stderr)
                report = run_child(mode, work, args)
                print(f"  {report['seconds']:.1f} s, {report['peak_mb']:.0f} MB", file=sys.stderr)
                measured.append((mode, run, report))
        if args.write_db:
            create_and_migrate(args.write_db)
            print("engine + DB writes ...", file=sys.stderr)
            report = run_child("write", work, args, args.write_db)
            measured.append(("write", 1, report))
    total = time.perf_counter() - started

    floors = {run: r["seconds"] for mode, run, r in measured if mode == "floor"}
    header = ["path", "run", "shoppers", "products", "lists", "items", "seconds", "x floor", "peak MB"]
    header += ["lists s", "process s"]
    labels = {
        "engine": "engine: recommend_chunks",
        "floor": "floor: U @ V.T + argpartition",
        "write": "engine + DB writes",
    }
    rows = []
    for mode, run, r in measured:
        rows.append(
            [
                labels[mode],
                str(run),
                f"{prepared['shoppers']:,}",
                f"{prepared['products']:,}",
                f"{r['lists']:,}",
                f"{r['items']:,}",
                f"{r['seconds']:.1f}",
                f"{r['seconds'] / floors.get(run, floors[1]):.2f}",
                f"{r['peak_mb']:.0f}",
                f"{r['consume']:.1f}" if "consume" in r else "-",
                f"{r['wall']:.1f}",
            ]
        )
    print_table(header, rows)
    print(
        "(seconds: the timed section; x floor: seconds / the floor's of the same run; lists s: building each "
        "list's (product id, score, reason) rows as _model_for_you does, plus the database writes on the write row, "
        "not in seconds; process s: the whole subprocess, loading included)"
    )
    print()
    part_rows = []
    for mode, run, r in measured:
        for part, seconds in r["parts"].items():
            part_rows.append([mode, str(run), part, f"{seconds:.2f}", f"{100 * seconds / r['seconds']:.0f} %"])
    print_table(["path", "run", "part", "seconds", "share"], part_rows)
    print()
    engine = next(r for mode, _, r in measured if mode == "engine")
    write = next((r for mode, _, r in measured if mode == "write"), None)
    if write is not None:
        print(f"DB writes (write lists s - engine lists s): {write['consume'] - engine['consume']:.1f} s")
    print(
        f"data: {prepared['events']:,} events after cleaning (prepared in {prepared['seconds']} s), "
        f"{prepared['active']:,} of {prepared['products']:,} products active, {prepared['purchases']:,} bought "
        f"(shopper, product) pairs excluded; model: neural fitted {fitted['seconds']:.0f} s "
        f"({sum(fitted['steps'])} steps, stopped: {fitted['stopped']}); top {TOP_N}"
    )
    print_footer(total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
