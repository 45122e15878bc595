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
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_e"
HISTORY_END = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so the data (and its marker) never depends on the clock
HISTORY_DAYS = 90
TASTE_SHARE = 0.85  # share of a shopper's events inside their favourite categories; the rest follow global taste
EVENT_MIX = [("view", 0.72), ("add_to_cart", 0.12), ("favorite", 0.06), ("purchase", 0.06), ("search", 0.04)]
QUERIES = ["red shoes", "coffee beans", "desk lamp", "yoga mat", "rain jacket", "usb cable", "teapot", "backpack"]
STAGES = ["load events", "build matrix", "trending", "similar", "for_you", "sales counts", "activate"]
COPY_CHUNK = 200_000


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
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the data even if the database is not named *bench* and holds events",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
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
    popularity = 1.0 / np.arange(1, p + 1) ** 0.9  # Zipf-like, shuffled so popular ids are spread out
    popularity = popularity[rng.permutation(p)]
    # A CDF per category laid end to end: category k spans [k, k + 1), so one searchsorted draws within any category.
    by_category = np.lexsort((np.arange(p), category))
    sorted_category = category[by_category]
    totals = np.bincount(category, weights=popularity, minlength=c)
    before = np.r_[0.0, np.cumsum(totals)[:-1]]  # weight of all the categories before each one
    within = (np.cumsum(popularity[by_category]) - before[sorted_category]) / totals[sorted_category]
    cdf = sorted_category + within
    global_cdf = np.cumsum(popularity) / popularity.sum()

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


def _shopper_ids(number: int) -> tuple[str, str, str]:
    """(user_id, visitor_id, shopper key): a third of shoppers are logged in, the rest anonymous visitors."""
    if number % 3 == 0:
        return str(number), "", f"u:{number}"
    visitor = f"{number:032x}"
    return "", visitor, f"v:{visitor}"


def copy_products(cursor: psycopg2.extensions.cursor, shop: Shop) -> None:
    buffer = io.StringIO()
    for i, (category, cents) in enumerate(zip(shop.product_category.tolist(), shop.price_cents.tolist(), strict=True)):
        pid = i + 1
        buffer.write(
            f"{pid}\tBench product {pid}\tcat-{category}\tbrand-{pid % 97}\t{cents / 100:.2f}\tt\tt\t\t"
            f"{HISTORY_END.isoformat()}\t0\t{HISTORY_END.isoformat()}\n"
        )
    buffer.seek(0)
    cursor.copy_expert(
        "COPY recommendations_productprofile (product_id, name, category, brand, price, in_stock, active, text, "
        "created_at, sales_count, updated_at) FROM STDIN",
        buffer,
    )


def copy_events(cursor: psycopg2.extensions.cursor, shop: Shop) -> None:
    names = [name for name, _ in EVENT_MIX]
    valued = {names.index(t) for t in ("add_to_cart", "purchase")}
    end = int(HISTORY_END.timestamp())
    columns = (
        "event_id, event_type, user_id, visitor_id, shopper, product_id, quantity, value, query, occurred_at, "
        "client_time, received_at, placement, recommendation_id, context"
    )
    ids = {number: _shopper_ids(number) for number in np.unique(shop.shopper).tolist()}
    n = int(shop.shopper.size)
    for start in range(0, n, COPY_CHUNK):
        stop = min(start + COPY_CHUNK, n)
        buffer = io.StringIO()
        rows = zip(
            shop.shopper[start:stop].tolist(),
            shop.product[start:stop].tolist(),
            shop.event_type[start:stop].tolist(),
            shop.seconds_before_end[start:stop].tolist(),
            shop.quantity[start:stop].tolist(),
            strict=True,
        )
        for i, (number, product, kind, seconds, quantity) in enumerate(rows, start=start):
            user_id, visitor_id, key = ids[number]
            moment = datetime.fromtimestamp(end - seconds, tz=UTC).isoformat()
            if product < 0:
                product_id, value, query, quantity = "", "\\N", QUERIES[i % len(QUERIES)], 1
            else:
                product_id = str(product + 1)
                value = f"{shop.price_cents[product] * quantity / 100:.2f}" if kind in valued else "\\N"
                query = ""
                if kind not in valued:
                    quantity = 1
            buffer.write(
                f"bench-{i:09d}\t{names[kind]}\t{user_id}\t{visitor_id}\t{key}\t{product_id}\t{quantity}\t{value}\t"
                f"{query}\t{moment}\t{moment}\t{moment}\t\t\t{{}}\n"
            )
        buffer.seek(0)
        cursor.copy_expert(f"COPY recommendations_event ({columns}) FROM STDIN", buffer)
        print(f"  {stop:,} / {n:,} events", file=sys.stderr)


# --- database -----------------------------------------------------------------------------------------------------


def django_env(url: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "shop.settings", "DJANGO_LOG_LEVEL": "WARNING"}
    for name in ("CELERY_BROKER_URL", "CACHE_URL"):  # eager tasks and a local cache: no shared Redis touched
        env.pop(name, None)
    return env


def migrate(url: str) -> None:
    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin = psycopg2.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, password=parts.password, dbname="postgres"
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=django_env(url), check=True
    )


def marker_for(size: str, seed: int) -> str:
    preset = PRESETS[size]
    return json.dumps({"size": size, "seed": seed, **preset.__dict__, "mix": EVENT_MIX, "v": 1}, sort_keys=True)


def data_in_place(url: str, marker: str) -> bool:
    """True when the marker names this data and the tables still hold exactly what was generated."""
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_dataset (marker text NOT NULL, events bigint, products int)")
        cursor.execute("SELECT marker, events, products FROM bench_dataset")
        found = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM recommendations_event")
        (events,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM recommendations_productprofile")
        (products,) = cursor.fetchone()
    conn.close()
    return found is not None and found == (marker, events, products)


def load_data(url: str, size: str, seed: int, marker: str, force: bool) -> None:
    name = urlparse(url).path.lstrip("/")
    started = time.perf_counter()
    shop = generate(PRESETS[size], seed)
    print(f"generated {shop.shopper.size:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM recommendations_event)")
        if cursor.fetchone()[0] and "bench" not in name and not force:
            raise SystemExit(f"refusing to replace the data of {name!r}: name a *bench* database or pass --force")
        cursor.execute("DELETE FROM bench_dataset")
        cursor.execute(
            "TRUNCATE recommendations_event, recommendations_productprofile, recommendations_storedlist, "
            "recommendations_precomputerun, recommendations_recommendationset"
        )
        copy_products(cursor, shop)
        copy_events(cursor, shop)
        cursor.execute(
            "INSERT INTO bench_dataset (marker, events, products) VALUES (%s, %s, %s)",
            [marker, int(shop.shopper.size), int(shop.product_category.size)],
        )
    conn.close()
    vacuum = psycopg2.connect(url)
    vacuum.autocommit = True
    with vacuum.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # so autovacuum does not start during the timed run
    vacuum.close()
    print(f"loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def stored_events(url: str) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM recommendations_event")
        (events,) = cursor.fetchone()
    conn.close()
    return events


def last_run_stats(url: str) -> tuple[int, dict]:
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT id, stats FROM recommendations_precomputerun WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1"
        )
        run_id, stats = cursor.fetchone()
    conn.close()
    return run_id, stats


# --- measuring ------------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(command: list[str], env: dict[str, str], max_seconds: float) -> Measured:
    """Run a command, returning its wall time and its own peak RSS (wait4 reports this child only, not earlier ones)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        timer = threading.Timer(max_seconds, lambda: os.killpg(process.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(seconds, usage.ru_maxrss / 1024, process.returncode, out.read(), err.read())


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")


def main() -> int:
    args = parse_args()
    url = args.database_url
    print(f"preparing {url} ...", file=sys.stderr)
    migrate(url)
    marker = marker_for(args.size, args.seed)
    if args.regenerate or not data_in_place(url, marker):
        load_data(url, args.size, args.seed, marker, args.force)
    else:
        print(f"the {args.size} data (seed {args.seed}) is already loaded; not regenerating", file=sys.stderr)
    env = django_env(url)
    stored = stored_events(url)
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
