"""Import benchmark: how fast `manage.py import_events` loads a large history file, and that nothing is lost.

    .venv/bin/python bench/import_events.py [--rows 1000000] [--products 20000] [--seed 7]

Writes a deterministic synthetic events CSV of `--rows` rows (the columns `import_events` reads; one row in ten
leaves event_id blank so the importer derives it from the content) and a matching catalog CSV into a temporary
directory. Creates and migrates a dedicated PostgreSQL database (DATABASE_URL, default .../rec_bench_e), loads the
catalog with `manage.py import_catalog`, empties the event table, then runs `manage.py import_events FILE
--no-progress` twice as a subprocess, timing each run and reading its peak RSS from the kernel (wait4). The first
run must store every row (counted afterwards); the second must find them all already stored. Prints one table and
exits non-zero if either check fails. Each subprocess is killed after `--max-seconds`. Results are kept in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import (
    Measured,
    add_database_arguments,
    count_events,
    create_and_migrate,
    django_env,
    print_table,
    refuse_foreign_events,
    run_measured,
    transaction,
    vacuum_analyze,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_e"
# A fixed end keeps the file byte-identical from run to run, and in the past so no timestamp is "in the future".
HISTORY_END = datetime(2026, 1, 1, tzinfo=UTC)
EVENT_MIX = [  # (event_type, share): what a shop's exported history holds (no impressions/clicks: no placements)
    ("view", 0.74),
    ("add_to_cart", 0.09),
    ("search", 0.05),
    ("favorite", 0.04),
    ("purchase", 0.04),
    ("remove_from_cart", 0.04),
]
QUERIES = ["red shoes", "coffee beans", "desk lamp", "yoga mat", "rain jacket", "usb cable", "teapot", "backpack"]
CATEGORIES = 40
IMPORTED = re.compile(r"Imported (\d+) events; (\d+) duplicates skipped")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="events in the file")
    parser.add_argument("--products", type=int, default=20_000, help="products in the catalog")
    parser.add_argument("--shoppers", type=int, default=100_000, help="distinct shoppers in the file")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="kill an import that runs longer")
    add_database_arguments(parser, DEFAULT_DATABASE_URL, force="empty the event table")
    args = parser.parse_args()
    if min(args.rows, args.products, args.shoppers) < 1:
        parser.error("--rows, --products and --shoppers must be at least 1")
    return args


# --- data ---------------------------------------------------------------------------------------------------------


def write_catalog(path: Path, products: int, rng: random.Random) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["product_id", "name", "category", "brand", "price", "in_stock"])
        for pid in range(1, products + 1):
            out.writerow(
                [
                    pid,
                    f"Bench product {pid}",
                    f"cat-{pid % CATEGORIES}",
                    f"brand-{pid % 97}",
                    f"{rng.uniform(2, 300):.2f}",
                    "true",
                ]
            )


def write_events(path: Path, rows: int, products: int, shoppers: int, rng: random.Random) -> None:
    """One event per row, timestamps strictly increasing so even the rows without an event_id are all distinct."""
    types = [t for t, _ in EVENT_MIX]
    weights = [w for _, w in EVENT_MIX]
    # Popularity skew: product ids drawn from a steep power law over the catalog.
    step = timedelta(seconds=3)
    moment = HISTORY_END - step * rows
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(
            ["event_id", "user_id", "visitor_id", "product_id", "event_type", "timestamp", "quantity", "value", "query"]
        )
        chosen_types = rng.choices(types, weights, k=rows)
        for i, event_type in enumerate(chosen_types):
            moment += step
            shopper = rng.randrange(shoppers)
            user_id, visitor_id = (str(shopper), "") if shopper % 3 == 0 else ("", f"{shopper:032x}")
            product_id = query = quantity = value = ""
            if event_type == "search":
                query = rng.choice(QUERIES)
            else:
                product_id = str(1 + int(products * rng.random() ** 3))
            if event_type in ("add_to_cart", "purchase", "remove_from_cart"):
                quantity = str(rng.randint(1, 3))
                value = f"{rng.uniform(2, 300):.2f}"
            event_id = "" if i % 10 == 9 else f"bench-{i:08d}"
            out.writerow(
                [event_id, user_id, visitor_id, product_id, event_type, moment.isoformat(), quantity, value, query]
            )


# --- database -----------------------------------------------------------------------------------------------------


def prepare_database(url: str, force: bool) -> None:
    """Create and migrate the database, then empty its events (refused on a non-bench database holding events)."""
    create_and_migrate(url)
    with transaction(url) as cursor:
        refuse_foreign_events(cursor, url, force, "empty the events")
        cursor.execute("TRUNCATE recommendations_event")
    vacuum_analyze(url, "recommendations_event")  # the emptied table's dead pages would count against the import


# --- measuring ------------------------------------------------------------------------------------------------------


def import_counts(result: Measured) -> tuple[int, int]:
    found = IMPORTED.search(result.stdout)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"import failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    return int(found.group(1)), int(found.group(2))


def main() -> int:
    args = parse_args()
    env = django_env(args.database_url)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        catalog, events = Path(tmp) / "catalog.csv", Path(tmp) / "events.csv"
        rng = random.Random(args.seed)
        print(f"writing {args.rows:,} events and {args.products:,} products to {tmp} ...", file=sys.stderr)
        write_catalog(catalog, args.products, rng)
        write_events(events, args.rows, args.products, args.shoppers, rng)
        file_mb = events.stat().st_size / 2**20
        print(f"preparing {args.database_url} ...", file=sys.stderr)
        prepare_database(args.database_url, args.force)
        manage = [sys.executable, "manage.py"]
        loaded = run_measured([*manage, "import_catalog", str(catalog), "--no-progress"], env, args.max_seconds)
        if loaded.returncode != 0:
            raise SystemExit(f"import_catalog failed:\n{loaded.stdout}\n{loaded.stderr[-3000:]}")
        runs: list[tuple[str, Measured, int, int, int]] = []
        for label in ("first", "again"):
            print(f"import_events ({label}) ...", file=sys.stderr)
            result = run_measured([*manage, "import_events", str(events), "--no-progress"], env, args.max_seconds)
            inserted, duplicates = import_counts(result)
            runs.append((label, result, inserted, duplicates, count_events(args.database_url)))
    header = ["run", "rows", "file MB", "seconds", "rows/s", "peak MB", "imported", "duplicates", "rows counted"]
    table = [
        [
            label,
            f"{args.rows:,}",
            f"{file_mb:.0f}",
            f"{result.seconds:.1f}",
            f"{args.rows / result.seconds:,.0f}",
            f"{result.peak_mb:.0f}",
            f"{inserted:,}",
            f"{duplicates:,}",
            f"{counted:,}",
        ]
        for label, result, inserted, duplicates, counted in runs
    ]
    print_table(header, table)
    print(f"(catalog of {args.products:,} products loaded by import_catalog in {loaded.seconds:.1f} s)")
    (_, _, first_in, _, first_count), (_, _, again_in, again_dup, again_count) = runs
    ok = first_in == first_count == args.rows and again_in == 0 and again_dup == args.rows and again_count == args.rows
    if not ok:
        print("FAILED: rows were lost, or the second import added rows", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
