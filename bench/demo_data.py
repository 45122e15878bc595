"""Demo data benchmark: how long `manage.py generate_demo_data` takes, and its peak memory, for a given shop size.

    .venv/bin/python bench/demo_data.py [--users 300] [--products 240] [--days 60] [--seed 7]

The defaults are the size `make demo` generates. The command only fills an empty shop, so each run drops and
recreates a dedicated PostgreSQL database (DATABASE_URL, default .../rec_bench_e_demo; refused unless its name
contains "bench"), migrates it, then runs `manage.py generate_demo_data --no-progress` with a fixed `--now` as a
subprocess, timing it and reading its peak RSS from the kernel (wait4). Celery runs eagerly, as in the demo.
Prints one table with the rows written. The run is killed after `--max-seconds`. Results are kept in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys

from common import (
    add_database_arguments,
    create_and_migrate,
    database_name,
    django_env,
    is_bench_database,
    print_row,
    run_measured,
    transaction,
)
from psycopg2 import sql

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_e_demo"
HISTORY_END = "2026-01-01T00:00:00+00:00"  # fixed, so the same arguments always generate the same shop
COUNTED = [
    ("products", "shop_product"),
    ("users", "auth_user"),
    ("orders", "shop_order"),
    ("events", "recommendations_event"),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300, help="registered shoppers (make demo: 300)")
    parser.add_argument("--products", type=int, default=240, help="products (make demo: 240)")
    parser.add_argument("--days", type=int, default=60, help="days of history (make demo: 60)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (make demo: 7)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="kill a generation that runs longer")
    add_database_arguments(parser, DEFAULT_DATABASE_URL)
    args = parser.parse_args()
    if min(args.users, args.products, args.days) < 1:
        parser.error("--users, --products and --days must be at least 1")
    return args


def fresh_database(url: str) -> None:
    """Drop, recreate and migrate the database: the generator refuses a shop that already has products."""
    if not is_bench_database(url):
        name = database_name(url)
        raise SystemExit(f"refusing to drop {name!r}: this benchmark only drops a database whose name contains 'bench'")
    create_and_migrate(url, fresh=True)


def count_rows(url: str) -> dict[str, int]:
    counts = {}
    with transaction(url) as cursor:
        for label, table in COUNTED:
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            (counts[label],) = cursor.fetchone()
    return counts


def main() -> int:
    args = parse_args()
    print(f"recreating {args.database_url} ...", file=sys.stderr)
    fresh_database(args.database_url)
    command = [sys.executable, "manage.py", "generate_demo_data", "--no-progress", "--now", HISTORY_END]
    command += ["--users", str(args.users), "--products", str(args.products), "--days", str(args.days)]
    command += ["--seed", str(args.seed)]
    print("generate_demo_data ...", file=sys.stderr)
    result = run_measured(command, django_env(args.database_url), args.max_seconds)
    if result.returncode != 0:
        print(f"generate_demo_data failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
        return 1
    print(result.stdout.strip(), file=sys.stderr)
    counts = count_rows(args.database_url)
    columns = [
        ("users arg", f"{args.users:,}"),
        ("products arg", f"{args.products:,}"),
        ("days", f"{args.days}"),
        ("seconds", f"{result.seconds:.1f}"),
        ("peak MB", f"{result.peak_mb:.0f}"),
        *((label, f"{count:,}") for label, count in counts.items()),
        ("events/s", f"{counts['events'] / result.seconds:,.0f}"),
    ]
    print_row(columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
