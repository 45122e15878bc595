"""What the benchmark scripts share: their bench database, the subprocess they measure, the tables they print.

The scripts run as `.venv/bin/python bench/<name>.py`, so this directory is first on sys.path and they import this
module as `common`. Nothing here imports Django at module level: a script decides when (and in which process) Django
is set up.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
COPY_CHUNK = 200_000
EVENT_COLUMNS = (
    "event_id, event_type, user_id, visitor_id, shopper, product_id, quantity, value, query, occurred_at, "
    "client_time, received_at, placement, recommendation_id, context"
)
PROFILE_COLUMNS = (
    "product_id, name, category, brand, price, in_stock, active, text, created_at, sales_count, updated_at"
)


# --- command line -------------------------------------------------------------------------------------------------


def add_database_arguments(parser: argparse.ArgumentParser, default_url: str, force: str = "") -> None:
    """--database-url (DATABASE_URL, else the script's own bench database) and, where the script empties tables,
    --force, the only way past the refusal to do that to a database not named *bench* that holds events."""
    if force:
        parser.add_argument(
            "--force",
            action="store_true",
            help=f"{force} even if the database is not named *bench* and holds events",
        )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", default_url))


# --- the bench database -------------------------------------------------------------------------------------------


def database_name(url: str) -> str:
    """The database a URL names (what the refusals check and quote)."""
    return urlparse(url).path.lstrip("/")


def is_bench_database(url: str) -> bool:
    """The scripts empty or replace tables; a name with "bench" in it is what says that is wanted."""
    return "bench" in database_name(url)


@contextmanager
def transaction(url: str) -> Iterator[Any]:
    """A cursor in one transaction (committed on success), the connection closed afterwards either way."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


@contextmanager
def autocommit(url: str, dbname: str = "") -> Iterator[Any]:
    """A cursor outside any transaction (CREATE / DROP DATABASE, VACUUM), on `dbname` of the server if given."""
    if dbname:
        parts = urlparse(url)
        conn = psycopg2.connect(
            host=parts.hostname, port=parts.port or 5432, user=parts.username, password=parts.password, dbname=dbname
        )
    else:
        conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def query_one(url: str, statement: str, params: list[Any] | None = None) -> tuple:
    with transaction(url) as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchone()


def count_events(url: str) -> int:
    return query_one(url, "SELECT count(*) FROM recommendations_event")[0]


def create_database(url: str, fresh: bool = False) -> None:
    """Create the database if it is missing; `fresh` drops it first (a caller that drops checks the name)."""
    name = database_name(url)
    with autocommit(url, dbname="postgres") as cursor:
        if fresh:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        else:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is not None:
                return
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def django_env(url: str) -> dict[str, str]:
    """The environment of a manage.py subprocess on `url` (none: DATABASE_URL unset, the SQLite default).

    Celery eager and a local-memory cache: a benchmark never touches a shared broker or cache unless it says so.
    """
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "shop.settings", "DJANGO_LOG_LEVEL": "WARNING"}
    for name in ("CELERY_BROKER_URL", "CACHE_URL", *(() if url else ("DATABASE_URL",))):
        env.pop(name, None)
    return env


def create_and_migrate(url: str, fresh: bool = False) -> None:
    """Create the database (dropped first when `fresh`) and bring it to the project's migrations."""
    create_database(url, fresh)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=django_env(url), check=True
    )


def refuse_foreign_events(cursor: Any, url: str, force: bool, doing: str) -> None:
    """Stop before `doing` (e.g. "empty the events") to a database that looks like someone's data: not named
    *bench* and holding events, unless --force says so."""
    cursor.execute("SELECT EXISTS (SELECT 1 FROM recommendations_event)")
    if cursor.fetchone()[0] and not is_bench_database(url) and not force:
        raise SystemExit(f"refusing to {doing} of {database_name(url)!r}: name a *bench* database or pass --force")


def vacuum_analyze(url: str, table: str = "") -> None:
    """So that autovacuum does not start during the timed run, nor dead pages count against it."""
    with autocommit(url) as cursor:
        cursor.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)) if table else "VACUUM ANALYZE")


# --- synthetic data kept between runs -----------------------------------------------------------------------------


def dataset_marker(url: str, table: str, columns: str, counts: list[str]) -> tuple[tuple | None, tuple[int, ...]]:
    """The marker row of `table` (created with `columns` if missing) and what the `counts` queries find now.

    A script keeps its generated data while the marker names the same arguments and the counts still match.
    """
    with transaction(url) as cursor:
        cursor.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(sql.Identifier(table), sql.SQL(columns)))
        cursor.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        found = cursor.fetchone()
        now = []
        for statement in counts:
            cursor.execute(statement)
            now.append(cursor.fetchone()[0])
    return found, tuple(now)


def production_env(database_url: str, cache_url: str, write_key: str, **more: str) -> dict[str, str]:
    """The environment of a server under test: the production settings (a fresh secret key, no HTTPS redirect,
    127.0.0.1 only) on the bench database and cache, with the ingest write key; `more` adds or overrides."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "shop.settings_production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,
        "CACHE_URL": cache_url,
        "RECOMMENDATIONS_WRITE_KEY": write_key,
        **more,
    }


def args_marker(args: Any, keys: tuple[str, ...], **more: Any) -> str:
    """The marker of a generated data set: the arguments that shaped it, and what else the script says (`more`)."""
    return json.dumps({**{k: getattr(args, k) for k in keys}, **more}, sort_keys=True)


def loaded_at(url: str, marker: str, table: str, columns: str, counts: list[str]) -> Any:
    """The load time a marker row (marker, loaded_at, *counts) keeps, when it names this data and the tables still
    hold exactly what was generated; else None."""
    found, now = dataset_marker(url, table, columns, counts)
    if found is not None and (found[0], *found[2:]) == (marker, *now):
        return found[1]
    return None


def data_in_place(url: str, marker: str) -> bool:
    """True when the marker names this data and the tables still hold exactly what was generated."""
    found, now = dataset_marker(
        url,
        "bench_dataset",
        "marker text NOT NULL, events bigint, products int",
        ["SELECT count(*) FROM recommendations_event", "SELECT count(*) FROM recommendations_productprofile"],
    )
    return found is not None and found == (marker, *now)


def truncate(cursor: Any, tables: list[str], cascade: bool = False) -> None:
    """Empty `tables`; `cascade` also empties every table that references them (only ever on a *bench* database)."""
    statement = sql.SQL("TRUNCATE {}" + (" CASCADE" if cascade else "")).format(
        sql.SQL(", ").join(map(sql.Identifier, tables))
    )
    cursor.execute(statement)


def replace_dataset(
    url: str,
    marker: str,
    tables: list[str],
    fill: Callable[[Any], None],
    counts: tuple[int, int],
    force: bool = False,
    cascade: bool = False,
) -> None:
    """Empty `tables` (see `truncate`), let `fill` COPY the new data, record its marker and (events, products)
    `counts` (one transaction), then vacuum.

    Refused on a database not named *bench* that holds events, unless `force`.
    """
    with transaction(url) as cursor:
        refuse_foreign_events(cursor, url, force, "replace the data")
        cursor.execute("DELETE FROM bench_dataset")
        truncate(cursor, tables, cascade)
        fill(cursor)
        cursor.execute("INSERT INTO bench_dataset (marker, events, products) VALUES (%s, %s, %s)", [marker, *counts])
    vacuum_analyze(url)


@functools.cache  # asked once per event, for a few distinct shoppers each
def shopper_ids(number: int) -> tuple[str, str, str]:
    """(user_id, visitor_id, shopper key): a third of shoppers are logged in, the rest anonymous visitors."""
    if number % 3 == 0:
        return str(number), "", f"u:{number}"
    visitor = f"{number:032x}"
    return "", visitor, f"v:{visitor}"


def zipf_popularity(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zipf-like weights (exponent 0.9), shuffled so the popular ids are spread over the catalog."""
    popularity = 1.0 / np.arange(1, n + 1) ** 0.9
    return popularity[rng.permutation(n)]


def category_cdf(category: np.ndarray, weight: np.ndarray, n_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """Products sorted by category and a CDF per category laid end to end ([k, k + 1) is category k).

    So one searchsorted of `k + random` draws a product of category k in proportion to its weight.
    """
    order = np.lexsort((np.arange(category.size), category))
    sorted_category = category[order]
    totals = np.bincount(category, weights=weight, minlength=n_categories)
    before = np.r_[0.0, np.cumsum(totals)[:-1]]
    within = (np.cumsum(weight[order]) - before[sorted_category]) / np.maximum(totals[sorted_category], 1e-300)
    return order, sorted_category + within


def event_line(
    event_id: str,
    event_type: str,
    ids: tuple[str, str, str],
    product_id: str,
    quantity: int,
    value: str,
    query: str,
    moment: str,
) -> str:
    """One EVENT_COLUMNS row of COPY text: occurred, sent and received at `moment`, no placement, empty context."""
    user_id, visitor_id, key = ids
    return (
        f"{event_id}\t{event_type}\t{user_id}\t{visitor_id}\t{key}\t{product_id}\t{quantity}\t{value}\t{query}\t"
        f"{moment}\t{moment}\t{moment}\t\t\t{{}}\n"
    )


def copy_events(cursor: Any, n: int, lines: Callable[[int, int], Iterable[str]]) -> None:
    """COPY events [0, n) in chunks, `lines(start, stop)` giving each chunk's rows, so one chunk is in memory."""
    for start in range(0, n, COPY_CHUNK):
        stop = min(start + COPY_CHUNK, n)
        buffer = io.StringIO()
        buffer.writelines(lines(start, stop))
        buffer.seek(0)
        cursor.copy_expert(f"COPY recommendations_event ({EVENT_COLUMNS}) FROM STDIN", buffer)
        print(f"  {stop:,} / {n:,} events", file=sys.stderr)


def copy_profiles(cursor: Any, buffer: io.StringIO) -> None:
    """COPY PROFILE_COLUMNS rows into the product profiles."""
    buffer.seek(0)
    # `categories` (a product in several) is NOT NULL with a Django-side default only; the bench rows have none.
    cursor.execute("ALTER TABLE recommendations_productprofile ALTER COLUMN categories SET DEFAULT '[]'::jsonb")
    cursor.copy_expert(f"COPY recommendations_productprofile ({PROFILE_COLUMNS}) FROM STDIN", buffer)


# --- measuring ------------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """A finished subprocess: wall seconds, its own peak RSS, exit code and output."""

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


def peak_mb() -> float:
    """This process's high-water resident set (VmHWM), in MB.

    Not wait4's ru_maxrss: at exec Linux folds the spawning process's resident set into the child's maximum, so a
    child of a parent holding generated data would report the parent's size.
    """
    with open("/proc/self/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    return kib / 1024


def import_project() -> None:
    """Make the project's packages importable: `python bench/<name>.py` puts only this directory on sys.path."""
    if str(ROOT) not in sys.path:
        sys.path.insert(1, str(ROOT))  # after this directory


def setup_django(**env: str) -> None:
    """Django in this process on the project's settings (the project importable), `env` set in the environment."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")
    os.environ.update(env)
    import_project()
    import django

    django.setup()


# --- reporting ------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else the architecture: the figures depend on it."""
    try:
        with open("/proc/cpuinfo") as handle:
            found = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        found = ""
    return found or platform.machine()


def hardware() -> str:
    """CPU count and model, memory: what the figures depend on."""
    with open("/proc/meminfo") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal"))
    return f"{os.cpu_count()} CPUs ({cpu_model()}), {kib / 1024**2:.0f} GiB RAM"


def machine() -> str:
    """The hardware and the Python version."""
    return f"{hardware()}, Python {platform.python_version()}"


def print_table(header: list[str], rows: list[list[str]], label_column: bool = False) -> None:
    """A markdown table, numbers right-aligned, as docs/benchmarks.md quotes it; `label_column`: the first left."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = [v.rjust(w) for v, w in zip(row, widths, strict=True)]
        if label_column:
            cells[0] = row[0].ljust(widths[0])
        print("| " + " | ".join(cells) + " |")


def print_footer(total_seconds: float) -> None:
    """The machine and the exact command, so a table pasted into docs/benchmarks.md says where it came from."""
    print(f"machine: {machine()}, numpy {np.__version__}")
    command = " ".join([f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    print(f"command: .venv/bin/python {command}  (total {total_seconds:.0f} s)")


def print_row(columns: list[tuple[str, str]]) -> None:
    """A one-row table of (column, value) pairs."""
    print_table([name for name, _ in columns], [[value for _, value in columns]])
