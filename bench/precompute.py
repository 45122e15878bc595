"""Precompute benchmark: how long `manage.py precompute_recommendations` takes, and its peak memory, per data size.

    .venv/bin/python bench/precompute.py [--size small|medium|large] [--runs 1] [--seed 7]

Creates and migrates a dedicated PostgreSQL database (DATABASE_URL, default .../rec_bench_e) and fills it with a
synthetic shop of the chosen size, COPied straight into the tables: a catalog in categories with a power-law
popularity, and shoppers who each favour one to three categories (most of their events fall there), so
co-occurrence has real structure to find. The data is deterministic for a seed and recorded in a marker table
(`bench_dataset`); a rerun with the same size and seed that finds the marker and the same row counts skips the
generation. Then it runs `manage.py precompute_recommendations --no-progress` `--runs` times as a subprocess,
timing each and reading its peak RSS from the kernel (wait4), and prints one table row per run with the stage
timings and list counts the run recorded (PrecomputeRun.stats). Each run is killed after `--max-seconds`.
Results are kept in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from common import (
    add_database_arguments,
    category_cdf,
    copy_events,
    copy_profiles,
    count_events,
    create_and_migrate,
    data_in_place,
    django_env,
    event_line,
    print_table,
    query_one,
    replace_dataset,
    run_measured,
    shopper_ids,
    zipf_popularity,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_e"
HISTORY_END = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so the data (and its marker) never depends on the clock
HISTORY_DAYS = 90
TASTE_SHARE = 0.85  # share of a shopper's events inside their favourite categories; the rest follow global taste
EVENT_MIX = [("view", 0.72), ("add_to_cart", 0.12), ("favorite", 0.06), ("purchase", 0.06), ("search", 0.04)]
QUERIES = ["red shoes", "coffee beans", "desk lamp", "yoga mat", "rain jacket", "usb cable", "teapot", "backpack"]
# The precompute's stages in the order it runs them (recommendations/lists/precompute.py STAGES).
STAGES = [
    "load events",
    "purchases",
    "build matrix",
    "trending",
    "similar",
    "for_you",
    "experiment lists",
    "sales counts",
    "activate",
]


@dataclass(frozen=True)
class Preset:
    shoppers: int
    products: int
    categories: int
    events_per_shopper: float


PRESETS = {
    "small": Preset(shoppers=2_000, products=500, categories=10, events_per_shopper=20),
    "medium": Preset(shoppers=20_000, products=5_000, categories=50, events_per_shopper=20),
    "large": Preset(shoppers=100_000, products=50_000, categories=200, events_per_shopper=15),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=PRESETS, default="small", help="data preset (default small)")
    parser.add_argument("--runs", type=int, default=1, help="precompute runs to time on the same data")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    parser.add_argument("--regenerate", action="store_true", help="generate the data even if the marker matches")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="kill a precompute that runs longer")
    add_database_arguments(parser, DEFAULT_DATABASE_URL, force="replace the data")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


# --- synthetic shop -----------------------------------------------------------------------------------------------


@dataclass
class Shop:
    product_category: np.ndarray  # per product (index = product id - 1)
    price_cents: np.ndarray
    shopper: np.ndarray  # per event, shopper number
    product: np.ndarray  # per event, product index, -1 for searches
    event_type: np.ndarray  # per event, index into EVENT_MIX
    seconds_before_end: np.ndarray  # per event
    quantity: np.ndarray


def generate(preset: Preset, seed: int) -> Shop:
    """Vectorised so the large preset (1.5M events) takes seconds: every draw is one numpy call."""
    rng = np.random.default_rng(seed)
    p, c, s = preset.products, preset.categories, preset.shoppers
    category = rng.integers(c, size=p)
    popularity = zipf_popularity(rng, p)
    by_category, cdf = category_cdf(category, popularity, c)
    global_cdf = np.cumsum(popularity) / popularity.sum()
    totals = np.bincount(category, weights=popularity, minlength=c)

    counts = rng.geometric(1.0 / preset.events_per_shopper, size=s)
    shopper = np.repeat(np.arange(s), counts)
    n = int(shopper.size)
    category_share = totals / totals.sum()
    tastes = rng.choice(c, size=(s, 3), p=category_share)
    n_tastes = rng.integers(1, 4, size=s)
    pick = (rng.random(n) * n_tastes[shopper]).astype(np.int64)
    taste = tastes[shopper, pick]
    in_taste = rng.random(n) < TASTE_SHARE
    product = np.empty(n, dtype=np.int64)
    product[in_taste] = by_category[
        np.minimum(np.searchsorted(cdf, taste[in_taste] + rng.random(int(in_taste.sum())), side="right"), p - 1)
    ]
    outside = ~in_taste
    product[outside] = np.minimum(np.searchsorted(global_cdf, rng.random(int(outside.sum())), side="right"), p - 1)
    event_type = rng.choice(len(EVENT_MIX), size=n, p=[share for _, share in EVENT_MIX])
    searches = event_type == [name for name, _ in EVENT_MIX].index("search")
    product[searches] = -1
    # Each shopper is active around a moment of their own, so recent weeks hold a realistic share for trending.
    centre = rng.random(s) * HISTORY_DAYS * 86_400
    spread = rng.exponential(5 * 86_400, size=n)
    seconds = np.clip(centre[shopper] + spread * rng.choice([-1, 1], size=n), 0, HISTORY_DAYS * 86_400).astype(np.int64)
    return Shop(
        product_category=category,
        price_cents=rng.integers(200, 30_000, size=p),
        shopper=shopper,
        product=product,
        event_type=event_type,
        seconds_before_end=seconds,
        quantity=rng.integers(1, 4, size=n),
    )


def copy_products(cursor: Any, shop: Shop) -> None:
    buffer = io.StringIO()
    for i, (category, cents) in enumerate(zip(shop.product_category.tolist(), shop.price_cents.tolist(), strict=True)):
        pid = i + 1
        buffer.write(
            f"{pid}\tBench product {pid}\tcat-{category}\tbrand-{pid % 97}\t{cents / 100:.2f}\tt\tt\t\t"
            f"{HISTORY_END.isoformat()}\t0\t{HISTORY_END.isoformat()}\n"
        )
    copy_profiles(cursor, buffer)


def event_lines(shop: Shop, start: int, stop: int) -> Iterator[str]:
    """COPY rows of events [start, stop); searches carry a query and no product, only carts and purchases a value."""
    names = [name for name, _ in EVENT_MIX]
    valued = {names.index(t) for t in ("add_to_cart", "purchase")}
    end = int(HISTORY_END.timestamp())
    rows = zip(
        shop.shopper[start:stop].tolist(),
        shop.product[start:stop].tolist(),
        shop.event_type[start:stop].tolist(),
        shop.seconds_before_end[start:stop].tolist(),
        shop.quantity[start:stop].tolist(),
        strict=True,
    )
    for i, (number, product, kind, seconds, quantity) in enumerate(rows, start=start):
        moment = datetime.fromtimestamp(end - seconds, tz=UTC).isoformat()
        if product < 0:
            product_id, value, query, quantity = "", "\\N", QUERIES[i % len(QUERIES)], 1
        else:
            product_id = str(product + 1)
            value = f"{shop.price_cents[product] * quantity / 100:.2f}" if kind in valued else "\\N"
            query = ""
            if kind not in valued:
                quantity = 1
        yield event_line(f"bench-{i:09d}", names[kind], shopper_ids(number), product_id, quantity, value, query, moment)


# --- database -----------------------------------------------------------------------------------------------------


def marker_for(size: str, seed: int) -> str:
    preset = PRESETS[size]
    return json.dumps({"size": size, "seed": seed, **preset.__dict__, "mix": EVENT_MIX, "v": 1}, sort_keys=True)


def load_data(url: str, size: str, seed: int, marker: str, force: bool) -> None:
    started = time.perf_counter()
    shop = generate(PRESETS[size], seed)
    n = int(shop.shopper.size)
    print(f"generated {n:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    def fill(cursor: Any) -> None:
        copy_products(cursor, shop)
        copy_events(cursor, n, lambda start, stop: event_lines(shop, start, stop))

    tables = ["event", "productprofile", "storedlist", "precomputerun", "recommendationset"]
    replace_dataset(url, marker, [f"recommendations_{t}" for t in tables], fill, (n, shop.product_category.size), force)
    print(f"loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def last_run_stats(url: str) -> tuple[int, dict]:
    return query_one(
        url, "SELECT id, stats FROM recommendations_precomputerun WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1"
    )


def main() -> int:
    args = parse_args()
    url = args.database_url
    print(f"preparing {url} ...", file=sys.stderr)
    create_and_migrate(url)
    marker = marker_for(args.size, args.seed)
    if args.regenerate or not data_in_place(url, marker):
        load_data(url, args.size, args.seed, marker, args.force)
    else:
        print(f"the {args.size} data (seed {args.seed}) is already loaded; not regenerating", file=sys.stderr)
    env = django_env(url)
    stored = count_events(url)
    header = ["size", "run", "events stored", "events used", "shoppers", "products", "wall s", "peak MB", *STAGES]
    header += ["stages total", "lists for_you", "lists similar", "lists trending"]
    rows = []
    for number in range(1, args.runs + 1):
        print(f"precompute_recommendations (run {number}) ...", file=sys.stderr)
        command = [sys.executable, "manage.py", "precompute_recommendations", "--no-progress"]
        result = run_measured(command, env, args.max_seconds)
        if result.returncode != 0:
            print(f"precompute failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
            return 1
        print(result.stdout, file=sys.stderr)
        _, stats = last_run_stats(url)
        seconds, lists = stats.get("seconds", {}), stats.get("lists", {})
        rows.append(
            [
                args.size,
                str(number),
                f"{stored:,}",
                f"{stats.get('events_used', 0):,}",
                f"{stats.get('shoppers', 0):,}",
                f"{stats.get('products', 0):,}",
                f"{result.seconds:.1f}",
                f"{result.peak_mb:.0f}",
                *(f"{seconds.get(stage, 0):.2f}" for stage in STAGES),
                f"{stats.get('seconds_total', 0):.2f}",
                *(f"{lists.get(placement, 0):,}" for placement in ("for_you", "similar", "trending")),
            ]
        )
    print_table(header, rows)
    print("(stage columns: seconds per stage as the run recorded them in PrecomputeRun.stats; wall s adds start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
