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
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
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
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    args = parser.parse_args()
    if min(args.users, args.products, args.days) < 1:
        parser.error("--users, --products and --days must be at least 1")
    return args


def django_env(url: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "shop.settings", "DJANGO_LOG_LEVEL": "WARNING"}
    for name in ("CELERY_BROKER_URL", "CACHE_URL"):  # eager tasks and a local cache, as in the demo
        env.pop(name, None)
    return env


def fresh_database(url: str) -> None:
    """Drop, recreate and migrate the database: the generator refuses a shop that already has products."""
    parts = urlparse(url)
    name = parts.path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"refusing to drop {name!r}: this benchmark only drops a database whose name contains 'bench'")
    admin = psycopg2.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, password=parts.password, dbname="postgres"
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=django_env(url), check=True
    )


def count_rows(url: str) -> dict[str, int]:
    counts = {}
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        for label, table in COUNTED:
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            (counts[label],) = cursor.fetchone()
    conn.close()
    return counts


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
    widths = [max(len(name), len(value)) for name, value in columns]
    print("| " + " | ".join(name.ljust(w) for (name, _), w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("| " + " | ".join(value.rjust(w) for (_, value), w in zip(columns, widths, strict=True)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
