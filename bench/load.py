"""Load and fault benchmark: the demo shop behind gunicorn and a Celery worker under a steady load of event batches
and browsing shoppers, with Redis stopped, the worker killed and PostgreSQL connections dropped along the way; then
every event sent is counted against the rows stored.

    .venv/bin/python bench/load.py [--quick] [--rate 1200] [--max-seconds 900]

Set-up (kept between runs while its marker matches): a dedicated database (default .../rec_bench_load, refused
unless its name contains "bench"), `generate_demo_data`, `train_recommender --candidates ease` and
`precompute_recommendations`. Each run deletes the events earlier runs added, starts a `redis-server` of its own on a
free port (broker in db 0, cache in db 1; the shared Redis is never touched), a Celery worker and gunicorn with the
production settings, and two client processes of its own on the same machine:

- events: `--senders` threads post batches of `--batch` events with the write key (a back end's path; the browser's
  path needs each shopper's consent cookie and sends a visitor's own events), paced to `--rate` new events a second.
  About 5 % of each batch's events are replays of ids already acknowledged, and one batch in ten carries an extra
  event whose query holds NUL (refused for that field, the batch's valid events stored). A 503 or 429 is retried
  with the same body after its Retry-After, a broken connection after a second, as README.md "Ingest API" and
  docs/operations.md tell a sender (the ids make the retry exact).
- pages: `--browsers` threads, each a shopper with a visitor cookie and `rec_consent=granted`, fetch the home page,
  a product page and the recommendations API in turn.

The phases run for fixed times; faults are injected at their start: Redis stopped (started again at the phase's end),
the worker's process group killed with SIGKILL (a new one started half-way), and every connection of the app's to
PostgreSQL terminated with `pg_terminate_backend` a few times. Prints one table per phase and the ledger; exits 1
when a target is missed. Results are kept in docs/benchmarks.md ("Load and faults").
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    add_database_arguments,
    autocommit,
    create_and_migrate,
    database_name,
    django_env,
    is_bench_database,
    machine,
    print_table,
    production_env,
    transaction,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_load"
MODEL_DIR = ROOT / "var" / "bench-load-models"
SETUP = {"users": 2000, "products": 1000, "days": 30, "seed": 7}
BLOCK_MARKER = b'class="rec-block"'  # what recommendations/block.html renders around every non-empty block
EVENT_TYPES = [("view", 0.7), ("add_to_cart", 0.12), ("click", 0.08), ("search", 0.05), ("purchase", 0.05)]
REPLAY_SHARE = 0.05
INVALID_BATCH_SHARE = 0.1
RETRY_AFTER_BROKEN = 1.0  # seconds before a batch whose answer never came is sent again
# One pool process: a second would only split the same 2 cores; --without-mingle: no peers to sync with.
WORKER_OPTIONS = ["-c", "1", "-l", "WARNING", "--without-mingle"]
CATCH_UP_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 1.5  # gunicorn closes a kept-alive connection idle for 2 s (its --keep-alive default)


@dataclass
class Phase:
    name: str
    seconds: float
    fault: str = ""  # "redis", "worker", "pg" or ""


def phases(quick: bool) -> list[Phase]:
    """Fixed lengths: enough requests in each for a p99 at the full length, about two minutes in all with --quick."""
    scale = 1 / 3 if quick else 1.0
    return [
        Phase("warm", 30 * scale),
        Phase("steady", 60 * scale),
        Phase("redis_down", 60 * scale, "redis"),
        Phase("after_redis", 30 * scale),
        Phase("worker_killed", 60 * scale, "worker"),
        Phase("pg_terminate", 60 * scale, "pg"),
        Phase("recovery", 30 * scale),
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="phases a third as long (~2 minutes of load)")
    parser.add_argument("--rate", type=float, default=1200.0, help="new events a second the senders aim at")
    parser.add_argument("--batch", type=int, default=50, help="events per request")
    parser.add_argument("--senders", type=int, default=48, help="event sender threads (a retry waits in its own)")
    parser.add_argument("--browsers", type=int, default=4, help="browsing shopper threads")
    parser.add_argument("--think", type=float, default=0.25, help="seconds a browsing shopper waits between requests")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (gthread)")
    parser.add_argument(
        "--worker-nice", type=int, default=10, help="the worker's nice level: its refreshes can wait, pages cannot"
    )
    parser.add_argument("--terminations", type=int, default=4, help="pg_terminate_backend rounds in the pg phase")
    parser.add_argument("--drain", type=float, default=45.0, help="seconds after the last phase for retries to end")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop everything after this long")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the shop even if its marker matches")
    add_database_arguments(parser, DEFAULT_DATABASE_URL)
    # The two client processes: started by the run itself, never by hand.
    parser.add_argument("--role", choices=["events", "pages"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--write-key", help=argparse.SUPPRESS)
    parser.add_argument("--shop-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.rate, args.batch, args.senders, args.browsers, args.workers, args.threads) <= 0:
        parser.error("--rate, --batch, --senders, --browsers, --workers and --threads must be positive")
    if not args.role and not is_bench_database(args.database_url):
        parser.error(f"refusing to use {database_name(args.database_url)!r}: name a *bench* database")
    return args


# --- the shop -------------------------------------------------------------------------------------------------------


def manage(url: str, *command: str, **env: str) -> None:
    """One manage.py command on the bench database (Celery eager, local cache); its output only when it fails."""
    done = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={**django_env(url), **env},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def prepare_shop(url: str, regenerate: bool) -> int:
    """The demo shop with a trained model and precomputed lists; returns the last event id of the set-up.

    Kept between runs while the marker names the same sizes and the model directory is there; each run deletes the
    events after that id (earlier runs' events), so the counts start from the same shop every time.
    """
    marker = json.dumps(SETUP, sort_keys=True)
    found = None
    if not regenerate:
        try:
            with transaction(url) as cursor:
                cursor.execute("SELECT marker, last_event FROM bench_load_dataset")
                found = cursor.fetchone()
        except Exception:  # no database or no marker table yet
            found = None
    if found and found[0] == marker and MODEL_DIR.exists():
        return int(found[1])
    print(f"building the shop in {database_name(url)} (about a minute) ...", file=sys.stderr)
    started = time.monotonic()
    create_and_migrate(url, fresh=True)
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    MODEL_DIR.mkdir(parents=True)
    sizes = [f"--{name}={value}" for name, value in SETUP.items()]
    manage(url, "generate_demo_data", *sizes, "--no-progress")
    models = {"RECOMMENDATIONS_MODEL_DIR": str(MODEL_DIR)}
    manage(url, "train_recommender", "--candidates", "ease", "--no-progress", **models)
    manage(url, "precompute_recommendations", "--no-progress", **models)
    with transaction(url) as cursor:
        cursor.execute("CREATE TABLE bench_load_dataset (marker text NOT NULL, last_event bigint NOT NULL)")
        cursor.execute(
            "INSERT INTO bench_load_dataset SELECT %s, coalesce(max(id), 0) FROM recommendations_event", [marker]
        )
        cursor.execute("SELECT last_event FROM bench_load_dataset")
        last = int(cursor.fetchone()[0])
    print(f"  built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return last


def reset_shop(url: str, last_event: int) -> dict[str, list[str]]:
    """Delete earlier runs' events; the shoppers (visitors with a for_you list) and products the clients use."""
    with transaction(url) as cursor:
        cursor.execute("DELETE FROM recommendations_event WHERE id > %s", [last_event])
        cursor.execute(
            "SELECT substr(subject, 3) FROM recommendations_storedlist WHERE placement = 'for_you' "
            "AND subject LIKE 'v:%%' ORDER BY subject LIMIT 2000"
        )
        visitors = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT slug, id FROM shop_product WHERE is_active AND stock > 0 ORDER BY id")
        products = cursor.fetchall()
    with autocommit(url) as cursor:
        cursor.execute("VACUUM ANALYZE recommendations_event")
    return {"visitors": visitors, "slugs": [s for s, _ in products], "product_ids": [str(p) for _, p in products]}


# --- the services ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server of the run's own on a free port, without persistence, stopped and started on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """As `systemctl stop` or a crash leaves it: the port refuses, the queue and the cache are gone."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def queued(self) -> int | None:
        """Messages waiting in the Celery queue, None while Redis is down."""
        if self.process is None:
            return None
        import redis

        try:
            return int(redis.Redis.from_url(self.url(0), socket_timeout=1).llen("celery"))
        except redis.RedisError:
            return None


def service_env(url: str, redis: OwnRedis, write_key: str) -> dict[str, str]:
    """Production settings on the bench database, broker and cache on the run's own Redis, default throttle rates."""
    env = production_env(
        url, redis.url(1), write_key, CELERY_BROKER_URL=redis.url(0), RECOMMENDATIONS_MODEL_DIR=str(MODEL_DIR)
    )
    env.pop("CELERY_RESULT_BACKEND", None)
    return env


class Service:
    """A server process in its own session, so the whole group (a worker and its pool) stops or dies together."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.exits: list[tuple[float, int]] = []  # (when, exit code) of each exit nobody asked for
        self.held_down = False  # killed on purpose: the supervisor leaves it down until start()
        self.stopping = threading.Event()

    def supervise(self, delay: float = 2.0) -> None:
        """Start it again `delay` seconds after it exits by itself, as systemd's Restart=always would."""

        def watch() -> None:
            while not self.stopping.wait(0.5):
                process = self.process
                if process is None or process.poll() is None or self.held_down:
                    continue
                self.exits.append((time.time(), process.returncode))
                print(f"  {self.name} exited by itself ({process.returncode}); starting it again", file=sys.stderr)
                self.process = None
                time.sleep(delay)
                if not self.stopping.is_set() and not self.held_down:
                    self.start()

        threading.Thread(target=watch, daemon=True).start()

    def start(self) -> None:
        self.held_down = False
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL to the whole group: what the OOM killer or a lost machine does to a worker."""
        self.held_down = True
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        self.stopping.set()
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_count(self, *needles: str) -> int:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return sum(text.count(needle) for needle in needles)


def wait_for_http(port: int, service: Service, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service.process is None or service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited; see {service.log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{service.name} did not answer within {seconds:.0f} s")


def terminate_backends(url: str) -> int:
    """End every session on the bench database but this one (web threads' kept connections, the worker's)."""
    with autocommit(url) as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [database_name(url)],
        )
        return int(cursor.fetchone()[0])


# --- the clients (run in their own processes) -------------------------------------------------------------------------


def event_body(prefix: str, number: int, product_ids: list[str], now: str) -> dict[str, Any]:
    """Event `number` of the run, the same every time it is built (a replay sends the same event again)."""
    rng = random.Random(number)
    event_type = rng.choices([t for t, _ in EVENT_TYPES], [w for _, w in EVENT_TYPES])[0]
    event: dict[str, Any] = {"event_id": f"{prefix}-{number}", "event_type": event_type, "timestamp": now}
    shopper = rng.randrange(50_000)
    if shopper % 3:
        event["visitor_id"] = f"{shopper:032x}"
    else:
        event["user_id"] = str(shopper)
    if event_type == "search":
        event["query"] = rng.choice(["coffee", "tea kettle", "green tea", "espresso"])
    else:
        event["product_id"] = rng.choice(product_ids)
    if event_type in {"add_to_cart", "purchase"}:
        event["quantity"] = rng.randint(1, 3)
        event["value"] = f"{rng.uniform(2, 90):.2f}"
    if event_type == "click":  # a click on a recommendation block names the block
        event["placement"] = rng.choice(["for_you", "similar", "trending"])
        event["recommendation_id"] = f"{rng.getrandbits(128):032x}"
    return event


class Pacer:
    """Hands out send times so that the senders together aim at `rate` new events a second, catching up after a stall
    as a shop's queue of unsent events would (at most CATCH_UP_SECONDS' worth); a retry waits in its own thread and
    does not hold the others back."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next = time.time()
        self.lock = threading.Lock()

    def wait(self, events: int) -> None:
        with self.lock:
            slot = max(self.next, time.time() - CATCH_UP_SECONDS)
            self.next = slot + events / self.rate
        delay = slot - time.time()
        if delay > 0:
            time.sleep(delay)


def run_event_client(args: argparse.Namespace) -> None:
    """Send batches until --until, retry what is unanswered until --drain later, then write what happened."""
    shop = json.loads(Path(args.shop_file).read_text())
    product_ids = shop["product_ids"]
    pacer = Pacer(args.rate)
    numbers = iter(range(10**12))
    acked: list[int] = []  # numbers a 200 acknowledged: the replay candidates
    unacked: list[int] = []
    records: list[list[Any]] = []
    checks = Counter()
    lock = threading.Lock()
    stop_new, give_up = args.until, args.until + args.drain

    def sender(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
        headers = {"Content-Type": "application/json", "X-Recommendations-Key": args.write_key}
        last_used = 0.0
        while True:
            size = args.batch
            replays = sum(rng.random() < REPLAY_SHARE for _ in range(size)) if acked else 0
            pacer.wait(size - replays)
            if time.time() >= stop_new:
                break
            now = datetime.now(UTC).isoformat()
            with lock:
                new = [next(numbers) for _ in range(size - replays)]
            old = [rng.choice(acked) for _ in range(replays)]
            events = [event_body(args.prefix, n, product_ids, now) for n in new + old]
            positions: list[int | None] = [*new, *[None] * len(old)]  # the new events' numbers, by index
            invalid_at = None
            if rng.random() < INVALID_BATCH_SHARE:
                invalid_at = rng.randrange(len(events) + 1)
                bad = {"event_id": f"{args.prefix}-bad-{new[0]}", "event_type": "search", "query": "a\x00b"}
                events.insert(invalid_at, {**bad, "visitor_id": f"{7:032x}", "timestamp": now})
                positions.insert(invalid_at, None)
            body = json.dumps({"events": events}).encode()
            attempt = 0
            while True:
                attempt += 1
                started = time.time()
                if started - last_used > KEEP_ALIVE_SECONDS:
                    conn.close()  # gunicorn has closed it meanwhile: open a fresh one rather than meet a reset
                try:
                    conn.request("POST", "/api/events/", body=body, headers=headers)
                    response = conn.getresponse()
                    payload, status = response.read(), response.status
                    retry_after = response.getheader("Retry-After")
                except (OSError, http.client.HTTPException):
                    conn.close()
                    payload, status, retry_after = b"", 0, None
                last_used = time.time()
                latency = last_used - started
                answer = json.loads(payload) if status in (200, 400, 429, 503) and payload else {}
                first = attempt == 1
                records.append(
                    [
                        started,
                        latency,
                        status,
                        len(new) if first else 0,
                        len(old) if first else 0,
                        answer.get("accepted", 0) if status == 200 else 0,
                        answer.get("duplicates", 0) if status == 200 else 0,
                    ]
                )
                if status == 200:
                    # An event listed in `errors` was not taken, whatever the status: only the others are acknowledged.
                    refused = {positions[e["index"]] for e in answer.get("errors", []) if e.get("index") is not None}
                    refused.discard(None)
                    if refused:
                        checks["valid events refused"] += len(refused)
                        unacked.extend(refused)
                    with lock:
                        acked.extend(n for n in new if n not in refused)
                    checks["replays in acknowledged batches"] += len(old)
                    checks["replays answered as duplicates"] += min(answer["duplicates"], len(old))
                    if invalid_at is not None:
                        checks["invalid events sent"] += 1
                        errors = answer.get("errors", [])
                        if any(e.get("index") == invalid_at and e.get("field") == "query" for e in errors):
                            checks["invalid events refused by index and field"] += 1
                    break
                if status in (429, 503) and retry_after:
                    wait = float(retry_after)  # exactly what the server asked for
                elif status == 0 or status >= 500:
                    wait = RETRY_AFTER_BROKEN
                else:  # a 4xx other than 429: this batch will never be taken; say so and move on
                    checks[f"batches refused with {status}"] += 1
                    unacked.extend(new)
                    break
                if time.time() + wait > give_up:
                    unacked.extend(new)
                    break
                time.sleep(wait)
        conn.close()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(args.senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = next(numbers)
    Path(args.out).write_text(
        json.dumps({"records": records, "sent": sent, "unacked": unacked, "checks": dict(checks)})
    )


def run_page_client(args: argparse.Namespace) -> None:
    """Shoppers browse until --until: home, a product page, the recommendations API; each request timed."""
    shop = json.loads(Path(args.shop_file).read_text())
    records: list[list[Any]] = []

    def browser(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
        pages = ["home", "product", "api_for_you", "api_trending"]
        turn = seed
        last_used = 0.0
        while time.time() < args.until:
            visitor = rng.choice(shop["visitors"])
            headers = {"Cookie": f"rec_vid={visitor}; rec_consent=granted"}
            kind = pages[turn % len(pages)]
            turn += 1
            path = {
                "home": "/",
                "product": f"/products/{rng.choice(shop['slugs'])}/",
                "api_for_you": "/api/recommendations/for_you/",
                "api_trending": "/api/recommendations/trending/",
            }[kind]
            started = time.time()
            if started - last_used > KEEP_ALIVE_SECONDS:
                conn.close()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                payload, status = response.read(), response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                payload, status = b"", 0
            last_used = time.time()
            latency = last_used - started
            blocks = payload.count(BLOCK_MARKER) if kind == "home" else -1
            records.append([started, latency, status, kind, blocks])
            time.sleep(args.think)
        conn.close()

    threads = [threading.Thread(target=browser, args=(i,)) for i in range(args.browsers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    Path(args.out).write_text(json.dumps({"records": records}))


# --- the run --------------------------------------------------------------------------------------------------------


@dataclass
class PhaseLog:
    phase: Phase
    start: float = 0.0
    end: float = 0.0
    fault: str = ""
    queued_at_end: int | None = None
    load: float = 0.0


def sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


def run_phases(
    plan: list[Phase], args: argparse.Namespace, redis: OwnRedis, worker: Service, run_until: float
) -> list[PhaseLog]:
    """Walk through the phases, injecting each one's fault; every phase's wall-clock window, for the tables."""
    logs = []
    for phase in plan:
        log = PhaseLog(phase, start=time.time())
        end = min(log.start + phase.seconds, run_until)
        print(f"  {datetime.now(UTC):%H:%M:%S} {phase.name} ({phase.seconds:.0f} s)", file=sys.stderr)
        if phase.fault == "redis":
            redis.stop()
            sleep_until(end)
            redis.start()
            log.fault = f"Redis stopped {phase.seconds:.0f} s, started empty"
        elif phase.fault == "worker":
            queued = redis.queued()
            worker.kill()
            back = log.start + phase.seconds / 2
            sleep_until(back)
            worker.start()
            log.fault = f"worker SIGKILLed ({queued} queued), new one after {phase.seconds / 2:.0f} s"
            sleep_until(end)
        elif phase.fault == "pg":
            rounds = max(1, args.terminations)
            gap = phase.seconds / (rounds + 1)
            ended = []
            for i in range(rounds):
                sleep_until(log.start + gap * (i + 1))
                ended.append(terminate_backends(args.database_url))
            log.fault = f"{rounds} x pg_terminate_backend ({'+'.join(map(str, ended))} sessions)"
            sleep_until(end)
        else:
            sleep_until(end)
        log.end = time.time()
        log.queued_at_end = redis.queued()
        log.load = os.getloadavg()[0]
        logs.append(log)
    return logs


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def statuses(counter: Counter) -> str:
    return " ".join(f"{status or 'conn'}:{n}" for status, n in sorted(counter.items())) or "-"


def ledger(url: str, prefix: str, sent: int, unacked: set[int]) -> dict[str, int]:
    """Every event id the senders sent against the rows stored, one row per id expected."""
    with transaction(url) as cursor:
        cursor.execute(
            "SELECT event_id, count(*) FROM recommendations_event WHERE event_id LIKE %s GROUP BY event_id",
            [f"{prefix}-%"],
        )
        rows = cursor.fetchall()
    stored: dict[int, int] = {}
    invalid_stored = 0
    for event_id, count in rows:
        tail = event_id[len(prefix) + 1 :]
        if tail.isdigit():
            stored[int(tail)] = count
        else:
            invalid_stored += count
    acknowledged = [n for n in range(sent) if n not in unacked]
    return {
        "sent": sent,
        "acknowledged": len(acknowledged),
        "stored": len(stored),
        "lost": sum(1 for n in acknowledged if n not in stored),
        "duplicated": sum(1 for count in stored.values() if count > 1),
        "unacknowledged": len(unacked),
        "unacknowledged but stored": sum(1 for n in unacked if n in stored),
        "invalid stored": invalid_stored,
    }


def report(
    logs: list[PhaseLog],
    events: dict[str, Any],
    pages: dict[str, Any],
    args: argparse.Namespace,
    worker_exits: list[tuple[float, int]],
) -> bool:
    """Print the per-phase table; True when every phase met the page targets and the event rate."""
    by_phase_events: dict[str, list] = defaultdict(list)
    by_phase_pages: dict[str, list] = defaultdict(list)

    def phase_of(moment: float) -> str:
        for log in logs:
            if log.start <= moment < log.end:
                return log.phase.name
        return "drain"

    for record in events["records"]:
        by_phase_events[phase_of(record[0])].append(record)
    for record in pages["records"]:
        by_phase_pages[phase_of(record[0])].append(record)
    header = [
        "phase",
        "s",
        "events sent",
        "accepted/s",
        "ingest answers",
        "ingest p99 ms",
        "pages",
        "page p50 ms",
        "page p99 ms",
        "api p50 ms",
        "api p99 ms",
        "page/api 5xx",
        "home with blocks",
        "queue",
        "load",
    ]
    rows = []
    ok = True
    for log in [*logs, PhaseLog(Phase("drain", 0), start=logs[-1].end, end=logs[-1].end + args.drain)]:
        name = log.phase.name
        ev, pg = by_phase_events[name], by_phase_pages[name]
        if name == "drain" and not ev and not pg:
            continue
        seconds = log.end - log.start if name != "drain" else 0.0
        accepted = sum(r[5] for r in ev)
        html = [r[1] for r in pg if r[3] in ("home", "product") and r[2] == 200]
        api = [r[1] for r in pg if r[3].startswith("api") and r[2] == 200]
        fivexx = sum(1 for r in pg if r[2] >= 500 or r[2] == 0)
        homes = [r for r in pg if r[3] == "home"]
        with_blocks = sum(1 for r in homes if r[4] > 0)
        rate = accepted / seconds if seconds else 0.0
        if name != "drain":
            # Every phase: no 5xx, blocks on every home page; the rate once warm (processes start cold).
            ok &= fivexx == 0 and bool(homes) and with_blocks == len(homes) and (name == "warm" or rate >= 1000)
        rows.append(
            [
                name,
                f"{seconds:.0f}",
                f"{sum(r[3] for r in ev):,}",
                f"{rate:,.0f}" if seconds else "-",
                statuses(Counter(r[2] for r in ev)),
                f"{percentile([r[1] for r in ev], 0.99) * 1000:.0f}" if ev else "-",
                statuses(Counter(r[2] for r in pg)),
                f"{percentile(html, 0.5) * 1000:.0f}" if html else "-",
                f"{percentile(html, 0.99) * 1000:.0f}" if html else "-",
                f"{percentile(api, 0.5) * 1000:.0f}" if api else "-",
                f"{percentile(api, 0.99) * 1000:.0f}" if api else "-",
                str(fivexx),
                f"{with_blocks}/{len(homes)}",
                "-" if log.queued_at_end is None else str(log.queued_at_end),
                f"{log.load:.1f}" if name != "drain" else "-",
            ]
        )
    print_table(header, rows, label_column=True)
    print()
    for log in logs:
        if log.fault:
            print(f"- {log.phase.name}: {log.fault}")
    for moment, code in worker_exits:
        print(f"- {phase_of(moment)}: the worker exited by itself ({code}); the supervisor started it again 2 s later")
    return ok


def start_client(role: str, args: argparse.Namespace, extra: dict[str, str], log_dir: Path) -> subprocess.Popen:
    command = [sys.executable, str(Path(__file__).resolve()), "--role", role]
    for name, value in extra.items():
        command += [f"--{name}", value]
    for name in ("rate", "batch", "senders", "browsers", "think", "drain"):
        command += [f"--{name}", str(getattr(args, name))]
    command += ["--database-url", args.database_url]
    with (log_dir / f"client-{role}.log").open("w") as log:
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def stopped(*_: Any) -> None:
    raise SystemExit("stopped at --max-seconds")


def main() -> int:
    args = parse_args()
    if args.role:
        sleep_until(args.start)  # the first phase's start: the process has had its time to import
    if args.role == "events":
        run_event_client(args)
        return 0
    if args.role == "pages":
        run_page_client(args)
        return 0
    began = time.monotonic()
    plan = phases(args.quick)
    last_event = prepare_shop(args.database_url, args.regenerate)
    shop = reset_shop(args.database_url, last_event)
    write_key = secrets.token_urlsafe(32)
    prefix = f"load{secrets.token_hex(4)}"
    log_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    redis = OwnRedis(log_dir)
    env: dict[str, str] = {}
    services: list[Service] = []
    clients: list[subprocess.Popen] = []
    timer = threading.Timer(args.max_seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, stopped)
    try:
        redis.start()
        env = service_env(args.database_url, redis, write_key)
        bin_dir = Path(sys.executable).parent
        web_port = free_port()
        web = Service(
            "gunicorn",
            [
                str(bin_dir / "gunicorn"),
                "shop.wsgi",
                "-k",
                "gthread",
                "-w",
                str(args.workers),
                "--threads",
                str(args.threads),
                "-b",
                f"127.0.0.1:{web_port}",
                "--log-level",
                "warning",
            ],
            env,
            log_dir,
        )
        worker = Service(
            "worker",
            ["nice", "-n", str(args.worker_nice), str(bin_dir / "celery"), "-A", "shop", "worker", *WORKER_OPTIONS],
            env,
            log_dir,
        )
        services = [web, worker]
        web.start()
        worker.start()
        worker.supervise()
        wait_for_http(web_port, web)
        shop_file = log_dir / "shop.json"
        shop_file.write_text(json.dumps(shop))
        total = sum(p.seconds for p in plan)
        until = time.time() + 2 + total
        common_extra = {
            "port": str(web_port),
            "start": f"{until - total:.3f}",
            "until": f"{until:.3f}",
            "shop-file": str(shop_file),
        }
        print(
            f"load: {args.rate:.0f} new events/s in batches of {args.batch} from {args.senders} senders, "
            f"{args.browsers} browsers; gunicorn {args.workers} x gthread {args.threads}, worker -c 1 at nice "
            f"{args.worker_nice}; logs in {log_dir}",
            file=sys.stderr,
        )
        clients = [
            start_client(
                "events",
                args,
                {**common_extra, "out": str(log_dir / "events.json"), "prefix": prefix, "write-key": write_key},
                log_dir,
            ),
            start_client("pages", args, {**common_extra, "out": str(log_dir / "pages.json")}, log_dir),
        ]
        sleep_until(until - total)
        logs = run_phases(plan, args, redis, worker, until)
        print(f"  {datetime.now(UTC):%H:%M:%S} waiting for the clients' last retries ...", file=sys.stderr)
        for client in clients:
            client.wait(args.drain + 60)
        if any(c.returncode for c in clients):
            raise SystemExit(f"a client process failed; see {log_dir}/client-*.log")
        settle = time.time() + 5  # the worker finishes what is queued; nothing the ledger counts depends on it
        sleep_until(settle)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        for service in services:
            service.stop()
        redis.stop()
    events = json.loads((log_dir / "events.json").read_text())
    pages = json.loads((log_dir / "pages.json").read_text())
    print()
    ok = report(logs, events, pages, args, worker.exits)
    counts = ledger(args.database_url, prefix, events["sent"], set(events["unacked"]))
    replays = sum(r[4] for r in events["records"])
    checks = {"replays sent": replays, **events["checks"]}
    print()
    print_table(list(counts), [[f"{v:,}" for v in counts.values()]])
    print()
    print("checks: " + ", ".join(f"{k} {v:,}" for k, v in checks.items()))
    errors = {s.name: s.log_count("Traceback", "[CRITICAL]", "WORKER TIMEOUT") for s in services}
    print(
        f"server logs: gunicorn {errors['gunicorn']} tracebacks/critical, worker {errors['worker']} "
        f"(logs in {log_dir}); worker started {worker.starts} times"
    )
    print(f"machine: {machine()}; load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    command = " ".join(["bench/load.py", *sys.argv[1:]])
    print(f"command: .venv/bin/python {command}  (total {time.monotonic() - began:.0f} s)")
    ok &= counts["lost"] == 0 and counts["duplicated"] == 0 and counts["invalid stored"] == 0
    ok &= checks.get("replays answered as duplicates", 0) == checks.get("replays in acknowledged batches", 0)
    print("targets: all met" if ok else "targets: MISSED (see the tables above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
