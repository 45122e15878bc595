"""Ingest benchmark: how many events per second POST /api/events/ stores behind gunicorn, and that none are lost.

    .venv/bin/python bench/ingest.py [--events 100000] [--clients 8] [--batch 100] [--workers N]

Creates and migrates a dedicated PostgreSQL database (DATABASE_URL, default .../rec_bench), empties its event
table, seeds a catalog of product profiles, starts gunicorn with the production settings on a free loopback port
(a random secret and write key, the server throttle raised out of the way), sends pre-built batches from
`--clients` threads with the write key, then counts the rows and prints one table. Bounded by `--events` and
`--max-seconds`; gunicorn is stopped on the way out whatever happens. Results are kept in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import (
    ROOT,
    add_database_arguments,
    count_events,
    create_and_migrate,
    print_row,
    production_env,
    refuse_foreign_events,
    transaction,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench"
CATALOG_SIZE = 2000
EVENT_MIX = [  # (event_type, share): roughly a shop's traffic, impressions included
    ("view", 0.62),
    ("impression", 0.18),
    ("add_to_cart", 0.08),
    ("click", 0.04),
    ("search", 0.03),
    ("favorite", 0.02),
    ("remove_from_cart", 0.02),
    ("purchase", 0.01),
]


def parse_args() -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to send in all")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--workers", type=int, default=2 * cores + 1, help="gunicorn workers (default 2*cores+1)")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class (sync, gthread)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker with --worker-class gthread")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    parser.add_argument(
        "--mode",
        choices=["server", "browser"],
        default="server",
        help="server: write key, events name their shopper; browser: anonymous visitor cookies, as the JS tracker",
    )
    add_database_arguments(parser, DEFAULT_DATABASE_URL, force="empty the event table")
    parser.add_argument(
        "--cache-url",
        default=os.environ.get("CACHE_URL", ""),
        help="Redis for the throttle counters (default: CACHE_URL; empty means per-process memory)",
    )
    parser.add_argument(
        "--broker-url",
        default="redis://127.0.0.1:6379/14",
        help="Redis broker the server enqueues near-real-time refresh tasks on, as in production (no worker "
        "consumes them here; the queue is emptied afterwards). Empty runs tasks eagerly in-process, as the demo.",
    )
    args = parser.parse_args()
    if min(args.events, args.clients, args.batch, args.workers) < 1:
        parser.error("--events, --clients, --batch and --workers must be at least 1")
    return args


# --- database -----------------------------------------------------------------------------------------------------


def prepare_database(url: str, force: bool) -> None:
    """Create the database if needed, migrate it, empty the events and seed the catalog profiles.

    Emptying the events is what makes the row count a proof, so it is refused on a database that looks like
    someone's data (not named *bench* and not empty) unless --force says so.
    """
    create_and_migrate(url)
    with transaction(url) as cursor:
        refuse_foreign_events(cursor, url, force, "empty the events")
        cursor.execute("TRUNCATE recommendations_event")
        cursor.execute(
            """
            INSERT INTO recommendations_productprofile
                (product_id, name, category, brand, in_stock, active, text, sales_count, updated_at)
            SELECT g::text, 'Bench product ' || g, 'cat-' || (g %% 20), '', true, true, '', 0, now()
            FROM generate_series(1, %s) AS g
            ON CONFLICT (product_id) DO NOTHING
            """,
            [CATALOG_SIZE],
        )


# --- server -------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def drain_broker(url: str) -> int:
    """Empty the refresh tasks the run enqueued (nobody consumes them here); returns how many there were."""
    if not url:
        return 0
    import redis

    client = redis.Redis.from_url(url)
    queued = client.llen("celery")
    client.delete("celery")
    return int(queued)


def start_gunicorn(args: argparse.Namespace, write_key: str, log_dir: Path) -> Server:
    port = free_port()
    env = production_env(
        args.database_url,
        args.cache_url,
        write_key,
        RECOMMENDATIONS_INGEST_KEY_RATE="1000000/min",
        RECOMMENDATIONS_INGEST_RATE="1000000/min",
    )
    env.pop("CELERY_BROKER_URL", None)
    if args.broker_url:
        env["CELERY_BROKER_URL"] = args.broker_url
    log_path = log_dir / "gunicorn.log"
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "shop.wsgi",
        "-w",
        str(args.workers),
        "-k",
        args.worker_class,
        "--threads",
        str(args.threads),
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.log_tail()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/events/")
            conn.getresponse().read()
            conn.close()
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"gunicorn did not answer within 30 s:\n{server.log_tail()}")


# --- load ---------------------------------------------------------------------------------------------------------


def build_bodies(events: int, batch: int, browser: bool, seed: int = 7) -> list[tuple[int, bytes, str]]:
    """Every request up front, so client threads only send and time: (event count, JSON bytes, visitor cookie).

    In browser mode a batch is one visitor's and names no shopper (the server fills in the cookie's id);
    in server mode each event names its own shopper and the cookie is empty.
    """
    rng = random.Random(seed)
    types = [t for t, _ in EVENT_MIX]
    weights = [w for _, w in EVENT_MIX]
    start = datetime.now(UTC) - timedelta(hours=1)
    bodies = []
    for offset in range(0, events, batch):
        items = []
        visitor = f"{rng.getrandbits(128):032x}" if browser else ""
        for i in range(offset, min(offset + batch, events)):
            event_type = rng.choices(types, weights)[0]
            shopper = rng.randrange(50_000)
            event = {
                "event_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "event_type": event_type,
                "timestamp": (start + timedelta(milliseconds=i * 30)).isoformat(),
            }
            if browser:
                pass
            elif shopper % 3:
                event["visitor_id"] = f"{shopper:032x}"
            else:
                event["user_id"] = str(shopper)
            if event_type == "search":
                event["query"] = rng.choice(["red shoes", "coffee", "desk lamp", "yoga mat"])
            else:
                # One in a hundred names a product the catalog does not know; those are kept too.
                event["product_id"] = str(rng.randint(1, CATALOG_SIZE * 101 // 100))
            if event_type in {"add_to_cart", "purchase", "remove_from_cart"}:
                event["quantity"] = rng.randint(1, 3)
                event["value"] = f"{rng.uniform(2, 200):.2f}"
            if event_type in {"impression", "click"}:
                event["placement"] = rng.choice(["for_you", "similar", "trending"])
                event["recommendation_id"] = uuid.UUID(int=rng.getrandbits(128)).hex
                event["context"] = {"rank": rng.randint(1, 8)}
            items.append(event)
        bodies.append((len(items), json.dumps({"events": items}).encode(), visitor))
    return bodies


@dataclass
class Totals:
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused_requests: int = 0
    refused_events: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(port: int, write_key: str, work: queue.Queue, deadline: float, totals: Totals) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    origin = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    sent = accepted = duplicates = refused_requests = refused_events = 0
    statuses: dict[int, int] = {}
    while time.monotonic() < deadline:
        try:
            count, body, visitor = work.get_nowait()
        except queue.Empty:
            break
        if visitor:
            headers = {"Content-Type": "application/json", "Origin": origin, "Cookie": f"rec_vid={visitor}"}
        else:
            headers = {"Content-Type": "application/json", "X-Recommendations-Key": write_key}
        started = time.perf_counter()
        try:
            conn.request("POST", "/api/events/", body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            status, payload = 0, b""
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
        sent += count
        if status == 200:
            answer = json.loads(payload)
            accepted += answer["accepted"]
            duplicates += answer["duplicates"]
        else:
            refused_requests += 1
            refused_events += count
    conn.close()
    with totals.lock:
        totals.latencies.extend(latencies)
        totals.sent += sent
        totals.accepted += accepted
        totals.duplicates += duplicates
        totals.refused_requests += refused_requests
        totals.refused_events += refused_events
        for status, n in statuses.items():
            totals.statuses[status] = totals.statuses.get(status, 0) + n


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main() -> int:
    args = parse_args()
    print(f"preparing {args.database_url} ...", file=sys.stderr)
    prepare_database(args.database_url, args.force)
    print(f"building {args.events} events in batches of {args.batch} ...", file=sys.stderr)
    bodies = build_bodies(args.events, args.batch, browser=args.mode == "browser")
    work: queue.Queue = queue.Queue()
    for item in bodies:
        work.put(item)
    write_key = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        print(f"starting gunicorn ({args.workers} x {args.worker_class}) ...", file=sys.stderr)
        server = start_gunicorn(args, write_key, Path(tmp))
        try:
            totals = Totals()
            started = time.perf_counter()
            deadline = time.monotonic() + args.max_seconds
            threads = [
                threading.Thread(target=client_loop, args=(server.port, write_key, work, deadline, totals))
                for _ in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
        finally:
            server.stop()
            refreshes = drain_broker(args.broker_url)
        if totals.refused_requests:
            print(f"refused requests by status: {totals.statuses}\n{server.log_tail(10)}", file=sys.stderr)
    rows = count_events(args.database_url)
    stored_expected = totals.sent - totals.refused_events
    lost = stored_expected - rows
    columns = [
        ("mode", args.mode),
        ("events", f"{totals.sent}"),
        ("clients", f"{args.clients}"),
        ("batch", f"{args.batch}"),
        ("workers", f"{args.workers} {args.worker_class}"),
        ("seconds", f"{seconds:.1f}"),
        ("events/s", f"{totals.sent / seconds:,.0f}"),
        ("p50 ms", f"{percentile(totals.latencies, 0.50) * 1000:.1f}"),
        ("p99 ms", f"{percentile(totals.latencies, 0.99) * 1000:.1f}"),
        ("accepted", f"{totals.accepted}"),
        ("refused", f"{totals.refused_events}"),
        ("rows counted", f"{rows}"),
        ("lost", f"{lost}"),
        ("refresh tasks", f"{refreshes}"),
    ]
    print_row(columns)
    if totals.sent < args.events:
        print(f"stopped at --max-seconds after {totals.sent} of {args.events} events", file=sys.stderr)
    return 0 if lost == 0 and totals.accepted == rows and not totals.refused_requests else 1


if __name__ == "__main__":
    sys.exit(main())
