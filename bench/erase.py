"""Erase benchmark: `manage.py erase_shopper --file ids.txt` erasing 100,000 of 200,000 shoppers from a ~1M-event
database, next to a floor measured in the same run, and proof that exactly those shoppers went.

    .venv/bin/python bench/erase.py [--runs 1] [--shoppers 200000] [--erase 100000] [--events-per-shopper 5]
                                    [--seed 7] [--rebuild] [--cache-url redis://127.0.0.1:6379/22]

Data (numpy, COPied into a dedicated database, DATABASE_URL, default .../rec_bench_erase, refused unless its name
contains "bench"; a marker table `bench_erase_dataset` makes a rerun reuse it, `--rebuild` regenerates it):

- 200,000 shoppers, a third logged in; half the logged-in ones browsed as a visitor first (their first events carry
  both ids, as a login merge leaves them) and some browsed logged out afterwards (events under that visitor alone);
- a geometric number of events each (mean 5, ~1M in all): views, searches, favourites, carts and removals,
  purchases, recommendation impressions (for_you stamped with an experiment arm, similar, trending) and clicks on
  the shopper's own earlier impressions, a few on someone else's (a shared link); 60 % of the carts and purchases
  that follow a click carry its recommendation id, placement and arm (attribution);
- an active recommendation set with a for_you list per shopper key, an experiment arm's `for_you@run5` list for the
  shoppers of arm B, similar lists and trending; a retired set with for_you lists for most shoppers;
- a Redis cache (`--cache-url`, which must hold nothing but this script's keys; emptied before and after; a stock
  Redis has databases 0-15 only, so db 22 needs `redis-server --databases 32`, or name another) holding cached
  blocks, shopper version stamps, queued-refresh marks and API throttle counters of a third of the shoppers, and the
  shared keys.

Each run copies that database twice (CREATE DATABASE ... TEMPLATE, so the data is never regenerated) and refills the
cache before each half:

- erase: `manage.py erase_shopper --file ids.txt` as a subprocess (progress bar on, DJANGO_DEBUG=0 as in production),
  the file naming 100,000 shoppers drawn at random (u:<user id> and v:<visitor id> lines; the visitors merged into
  a named user are found by the command). *seconds* is its wall time, Django start-up included; *peak MB* its own
  high-water resident set (VmHWM, polled, since wait4 also counts this script's memory at exec);
- floor: the same erasure as a hand-written one-off would do it, in this process: one transaction of three
  statements (`DELETE ... WHERE shopper = ANY(...) OR user_id = ANY(...) OR visitor_id = ANY(...)` returning the
  recommendation ids, the `UPDATE` blanking other rows that point at them, `DELETE` of the stored lists), then one
  SCAN of the cache deleting the keys of those shoppers.

Before each half the script computes from the data what must go (events, stored lists, pointers on other rows,
cache keys) and a digest of everything else; afterwards it checks that no event, list or cache key of an erased
shopper is left, that no row still points at an erased block, that the other shoppers' rows and keys are exactly
the same, and that the command's own counts and ErasureRequest agree. Any difference fails the run loudly (exit 1).
A second table splits each erasure's seconds by stage (the command's own, from its ErasureRequest). Results are kept
in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
from common import (
    ROOT,
    add_database_arguments,
    autocommit,
    create_and_migrate,
    database_name,
    dataset_marker,
    django_env,
    import_project,
    is_bench_database,
    print_footer,
    print_table,
    shopper_ids,
    transaction,
    vacuum_analyze,
    zipf_popularity,
)
from psycopg2 import sql

import_project()
from recommendations import keys  # noqa: E402 - needs the project on sys.path; imports nothing of Django

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_erase"
DEFAULT_CACHE_URL = "redis://127.0.0.1:6379/22"
HISTORY_END = datetime(2026, 1, 1, tzinfo=UTC)  # fixed: the data is the same from run to run
PRODUCTS = 20_000
ARM_LIST = keys.arm_list("for_you", 5)
EVENT_MIX = [  # (type, share) before clicks without an earlier impression become views
    ("view", 0.56),
    ("impression", 0.18),
    ("click", 0.05),
    ("add_to_cart", 0.07),
    ("purchase", 0.03),
    ("favorite", 0.03),
    ("search", 0.05),
    ("remove_from_cart", 0.03),
]
TYPES = [name for name, _ in EVENT_MIX]
COLUMNS = (
    "event_id, event_type, user_id, visitor_id, shopper, product_id, quantity, value, query, occurred_at, "
    "client_time, received_at, placement, recommendation_id, variant, context"
)
QUERIES = ["red shoes", "coffee beans", "desk lamp", "yoga mat", "rain jacket", "usb cable", "teapot", "backpack"]
SUMMARY = re.compile(r"Erased (\d+) shopper ids?: (\d+) events, (\d+) stored lists, (\d+|\?) cache keys")
DJANGO_PREFIX = ":1:"  # Django's cache.make_key with no KEY_PREFIX, version 1
SHARED_KEYS = [
    keys.ACTIVE_SET,
    keys.RULES_VERSION,
    keys.PROFILES_VERSION,
    "throttle:recommendations_read_key:write-key:60",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="erase and floor pairs, each on fresh copies")
    parser.add_argument("--shoppers", type=int, default=200_000)
    parser.add_argument("--erase", type=int, default=100_000, help="shoppers named in the ids file")
    parser.add_argument("--events-per-shopper", type=float, default=5.0)
    parser.add_argument("--cached-share", type=float, default=0.33, help="shoppers with keys in the cache")
    parser.add_argument("--seed", type=int, default=7, help="seed of the data and of the erased sample")
    parser.add_argument("--rebuild", action="store_true", help="generate the data even if the marker matches")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="kill an erasure that runs longer")
    parser.add_argument("--batch-size", default="", help="pass --batch-size to erase_shopper (default: its own)")
    parser.add_argument("--force", action="store_true", help="use a cache database that holds other keys")
    add_database_arguments(parser, DEFAULT_DATABASE_URL)
    parser.add_argument("--cache-url", default=DEFAULT_CACHE_URL)
    args = parser.parse_args()
    if not 1 <= args.erase <= args.shoppers:
        parser.error("--erase must be from 1 to --shoppers")
    if not is_bench_database(args.database_url):
        parser.error(f"refusing to use {database_name(args.database_url)!r}: name a *bench* database")
    return args


# --- synthetic shop -----------------------------------------------------------------------------------------------


@dataclass
class Data:
    shoppers: int
    users: np.ndarray  # per shopper: logged in
    linked: np.ndarray  # per shopper: a logged-in shopper who browsed as a visitor first
    events: list[str] = field(repr=False)  # COPY lines
    keys: list[str] = field(repr=False)  # every shopper key with events (u:, v:, and the linked visitors' v:)
    arm_b: set[str] = field(repr=False)


def linked_visitor(number: int) -> str:
    """A logged-in shopper's browser before login (a number that is a user's is never a visitor's)."""
    return f"{number:032x}"


def arm_of(number: int) -> str:
    return "1:A" if number % 2 == 0 else "1:B"


def generate(args: argparse.Namespace) -> Data:
    """Vectorised draws; the COPY lines are formatted once (a few seconds)."""
    rng = np.random.default_rng(args.seed)
    n_shoppers = args.shoppers
    numbers = np.arange(n_shoppers)
    users = numbers % 3 == 0
    linked = users & (numbers % 6 == 0)
    per = rng.geometric(1.0 / args.events_per_shopper, size=n_shoppers)
    shopper = np.repeat(numbers, per)
    n = int(shopper.size)
    start = np.r_[0, np.cumsum(per)[:-1]]
    position = np.arange(n) - start[shopper]
    kind = rng.choice(len(EVENT_MIX), size=n, p=[share for _, share in EVENT_MIX])
    impression, click = TYPES.index("impression"), TYPES.index("click")
    index = np.arange(n)
    last_impression = np.maximum.accumulate(np.where(kind == impression, index, -1))
    own = last_impression >= start[shopper]
    shared = (kind == click) & ~own & (rng.random(n) < 0.03)  # a link to someone's block
    kind[(kind == click) & ~own & ~shared] = TYPES.index("view")
    impressions = np.flatnonzero(kind == impression)
    pointer = np.full(n, -1)
    pointer[(kind == click) & own] = last_impression[(kind == click) & own]
    pointer[shared] = impressions[rng.integers(0, impressions.size, size=int(shared.sum()))]
    last_click = np.maximum.accumulate(np.where(kind == click, index, -1))
    converts = np.isin(kind, [TYPES.index("add_to_cart"), TYPES.index("purchase")])
    attributed = converts & (last_click >= start[shopper]) & (rng.random(n) < 0.6)
    attributed &= pointer[np.maximum(last_click, 0)] >= 0
    pointer[attributed] = pointer[last_click[attributed]]
    placement = rng.choice(["for_you", "similar", "trending"], size=n, p=[0.6, 0.3, 0.1])
    product = rng.choice(PRODUCTS, size=n, p=_weights(rng)) + 1
    merged = linked[shopper] & (position < 2)
    logged_out = linked[shopper] & (position == per[shopper] - 1) & (per[shopper] >= 4)
    seconds_before = (per[shopper] - position) * 900 + (shopper * 7919) % (80 * 86_400)
    quantity = rng.integers(1, 4, size=n)
    cents = rng.integers(200, 30_000, size=n)
    query = rng.integers(0, len(QUERIES), size=n)
    shown = rng.integers(1, PRODUCTS + 1, size=(n, 3)).tolist()
    # Python lists: indexing a numpy array a million times over is what would make this slow.
    shopper_at, kind_at, pointer_at, placement_at = (
        shopper.tolist(),
        kind.tolist(),
        pointer.tolist(),
        placement.tolist(),
    )
    product_at, quantity_at, cents_at, query_at = product.tolist(), quantity.tolist(), cents.tolist(), query.tolist()
    merged_at, logged_out_at, attributed_at = merged.tolist(), logged_out.tolist(), attributed.tolist()
    seconds_at = seconds_before.tolist()
    lines = []
    for j in range(n):
        s = shopper_at[j]
        user_id, visitor_id, key = shopper_ids(s)
        if merged_at[j]:
            visitor_id = linked_visitor(s)
        elif logged_out_at[j]:
            user_id, visitor_id, key = "", linked_visitor(s), f"v:{linked_visitor(s)}"
        event_type = TYPES[kind_at[j]]
        product_id = query_text = place = rec = variant = ""
        context, quantity_text, value = "{}", "1", "\\N"
        if event_type == "search":
            query_text = QUERIES[query_at[j]]
        elif event_type != "impression":
            product_id = str(product_at[j])
        if event_type in ("add_to_cart", "purchase", "remove_from_cart"):
            quantity_text = str(quantity_at[j])
            value = f"{cents_at[j] / 100:.2f}"
        target = j if event_type == "impression" else pointer_at[j]
        if target >= 0:
            place = placement_at[target]
            rec = f"b1{target:030x}"
            variant = arm_of(shopper_at[target]) if place == "for_you" else ""
        if event_type == "impression":
            context = json.dumps({"items": [str(p) for p in shown[j]], "sources": ["model"] * 3})
        elif attributed_at[j]:
            context = '{"attributed": "click"}'
        moment = (HISTORY_END - timedelta(seconds=seconds_at[j])).isoformat()
        lines.append(
            f"bench-{j:08d}\t{event_type}\t{user_id}\t{visitor_id}\t{key}\t{product_id}\t{quantity_text}\t{value}\t"
            f"{query_text}\t{moment}\t{moment}\t{moment}\t{place}\t{rec}\t{variant}\t{context}\n"
        )
    keys_with_events = {line.split("\t", 5)[4] for line in lines}
    arm_b = {shopper_ids(s)[2] for s in range(n_shoppers) if arm_of(s) == "1:B"}
    return Data(n_shoppers, users, linked, lines, sorted(keys_with_events), arm_b)


def _weights(rng: np.random.Generator) -> np.ndarray:
    popularity = zipf_popularity(rng, PRODUCTS)
    return popularity / popularity.sum()


def list_lines(data: Data, rng: np.random.Generator) -> list[str]:
    """StoredList COPY rows: set 2 active (for_you per shopper key, the arm's list, similar, trending), set 1 retired
    (for_you for most shopper keys, from an earlier precompute)."""
    pool = [
        json.dumps([[str(p), round(1 - i / 20, 3), f"because:{p + 1}"] for i, p in enumerate(row)])
        for row in rng.integers(1, PRODUCTS + 1, size=(2000, 10)).tolist()
    ]
    pick = rng.integers(0, len(pool), size=len(data.keys) * 3)
    older = rng.random(len(data.keys)) < 0.7
    rows = []
    for i, key in enumerate(data.keys):
        rows.append(f"2\tfor_you\t{key}\t{pool[pick[i]]}\n")
        if key in data.arm_b:
            rows.append(f"2\t{ARM_LIST}\t{key}\t{pool[pick[i + len(data.keys)]]}\n")
        if older[i]:
            rows.append(f"1\tfor_you\t{key}\t{pool[pick[i + 2 * len(data.keys)]]}\n")
    for product in range(1, 5001):
        rows.append(f"2\tsimilar\t{product}\t{pool[product % len(pool)]}\n")
    rows.append(f"2\ttrending\t\t{pool[0]}\n")
    return rows


def marker_for(args: argparse.Namespace) -> str:
    chosen = ("shoppers", "events_per_shopper", "seed")
    return json.dumps({**{k: getattr(args, k) for k in chosen}, "mix": EVENT_MIX, "v": 1}, sort_keys=True)


def data_in_place(url: str, marker: str) -> bool:
    found, now = dataset_marker(
        url,
        "bench_erase_dataset",
        "marker text NOT NULL, events bigint, lists bigint",
        ["SELECT count(*) FROM recommendations_event", "SELECT count(*) FROM recommendations_storedlist"],
    )
    return found is not None and found == (marker, *now)


def load(url: str, args: argparse.Namespace, marker: str) -> None:
    started = time.perf_counter()
    data = generate(args)
    lists = list_lines(data, np.random.default_rng(args.seed + 1))
    print(
        f"generated {len(data.events):,} events, {len(lists):,} lists in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    with transaction(url) as cursor:
        cursor.execute("DELETE FROM bench_erase_dataset")
        cursor.execute(
            "TRUNCATE recommendations_event, recommendations_storedlist, recommendations_recommendationset, "
            "recommendations_erasurerequest CASCADE"  # a *bench* database only (parse_args refuses others)
        )
        for chunk in range(0, len(data.events), 200_000):
            cursor.copy_expert(
                f"COPY recommendations_event ({COLUMNS}) FROM STDIN",
                io.StringIO("".join(data.events[chunk : chunk + 200_000])),
            )
        loaded = HISTORY_END.isoformat()
        cursor.execute(
            "INSERT INTO recommendations_recommendationset (id, created_at, activated_at, status, algorithm, stats) "
            "VALUES (1, %s, %s, 'retired', 'model', '{}'), (2, %s, %s, 'active', 'model', '{}')",
            [loaded, loaded, loaded, loaded],
        )
        cursor.copy_expert(
            "COPY recommendations_storedlist (recommendation_set_id, placement, subject, items) FROM STDIN",
            io.StringIO("".join(lists)),
        )
        cursor.execute(
            "INSERT INTO bench_erase_dataset (marker, events, lists) VALUES (%s, %s, %s)",
            [marker, len(data.events), len(lists)],
        )
    vacuum_analyze(url)
    print(f"loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def erased_sample(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(user ids, visitor ids) of the shoppers the file names: `--erase` of them, drawn with the seed."""
    picked = np.sort(np.random.default_rng(args.seed + 2).permutation(args.shoppers)[: args.erase])
    users, visitors = [], []
    for number in picked.tolist():
        user_id, visitor_id, _ = shopper_ids(number)
        (users if user_id else visitors).append(user_id or visitor_id)
    return users, visitors


# --- the copies and the cache ---------------------------------------------------------------------------------------


def url_of(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def copy_database(url: str, suffix: str) -> str:
    """A fresh copy of the bench database (file copy of the template), named `<name>_<suffix>`."""
    name = f"{database_name(url)}_{suffix}"
    with autocommit(url, dbname="postgres") as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        for attempt in range(10):  # an autovacuum worker on the template makes CREATE wait and fail: retry
            try:
                cursor.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                        sql.Identifier(name), sql.Identifier(database_name(url))
                    )
                )
                break
            except psycopg2.errors.ObjectInUse:
                if attempt == 9:
                    raise
                time.sleep(2)
    return url_of(url, name)


def drop_database(url: str) -> None:
    with autocommit(url, dbname="postgres") as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database_name(url))))


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def check_cache(url: str, force: bool) -> None:
    import redis

    try:
        foreign = [k for k in redis_client(url).scan_iter(count=1000) if not k.startswith(DJANGO_PREFIX.encode())]
    except redis.exceptions.ResponseError as exc:  # "DB index is out of range": a stock Redis has databases 0-15
        raise SystemExit(
            f"cannot use {url}: {exc}; pass --cache-url with a database the server has (redis-server --databases 32 "
            "has 0-31)"
        ) from None
    if foreign and not force:
        raise SystemExit(f"refusing to empty {url}: it holds {len(foreign)}+ keys that are not this script's")


def fill_cache(url: str, shopper_keys: list[str], share: float, seed: int) -> dict[str, str]:
    """Empty the cache, then write what serving and the API leave for a share of the shoppers; returns every
    per-shopper key written, to its shopper."""
    client = redis_client(url)
    client.flushdb()
    rng = np.random.default_rng(seed)
    cached = [k for k, keep in zip(shopper_keys, rng.random(len(shopper_keys)) < share, strict=True) if keep]
    owned: dict[str, str] = {}
    for i, shopper in enumerate(cached):
        owned[keys.block(shopper, "for_you", 8, "r17", "s2")] = shopper
        owned[keys.block(shopper, "similar", 8, "p123", "r17", "s2")] = shopper
        owned[keys.shopper_version(shopper)] = shopper
        if i % 10 == 0:
            owned[keys.refresh_pending(shopper)] = shopper
            owned[keys.THROTTLE % {"scope": "recommendations_read", "ident": shopper} + ":60"] = shopper
    value = b"\x80\x05" + b"x" * 600  # about a pickled block's size
    with client.pipeline(transaction=False) as pipe:
        for i, key in enumerate([*owned, *SHARED_KEYS]):
            pipe.set(DJANGO_PREFIX + key, value, ex=86_400)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
    return owned


def cache_keys(url: str) -> set[str]:
    return {k.decode()[len(DJANGO_PREFIX) :] for k in redis_client(url).scan_iter(count=5000)}


# --- what must go, and what must stay -----------------------------------------------------------------------------


@dataclass
class Facts:
    events: int
    lists: int
    gone_events: int
    gone_lists: int
    pointers: int  # other shoppers' rows pointing at an erased block
    other_events: tuple
    other_lists: tuple
    keys_erased: int
    keys_kept: int


def load_expectation(url: str, users: list[str], visitors: list[str]) -> None:
    """Tables of the erased ids in the copy, by the documented rule: the named users and visitors, and the visitors
    merged into a named user (their events carry both ids)."""
    with transaction(url) as cursor:
        cursor.execute(
            "CREATE TABLE bench_gone_user (id text PRIMARY KEY); CREATE TABLE bench_gone_visitor (id text PRIMARY KEY);"
            "CREATE TABLE bench_gone_key (id text PRIMARY KEY); CREATE TABLE bench_gone_rec (id text PRIMARY KEY)"
        )
        cursor.copy_expert("COPY bench_gone_user FROM STDIN", io.StringIO("".join(f"{u}\n" for u in users)))
        cursor.copy_expert("COPY bench_gone_visitor FROM STDIN", io.StringIO("".join(f"{v}\n" for v in visitors)))
        cursor.execute(
            "INSERT INTO bench_gone_visitor SELECT DISTINCT e.visitor_id FROM recommendations_event e "
            "JOIN bench_gone_user u ON u.id = e.user_id WHERE e.visitor_id <> '' ON CONFLICT DO NOTHING"
        )
        cursor.execute(
            "INSERT INTO bench_gone_key SELECT 'u:' || id FROM bench_gone_user "
            "UNION SELECT 'v:' || id FROM bench_gone_visitor"
        )
        cursor.execute(
            f"INSERT INTO bench_gone_rec SELECT DISTINCT recommendation_id FROM recommendations_event e "
            f"WHERE ({GONE}) AND recommendation_id <> ''"
        )
        cursor.execute("ANALYZE bench_gone_user; ANALYZE bench_gone_visitor; ANALYZE bench_gone_key")


GONE = (
    "e.shopper IN (SELECT id FROM bench_gone_key) OR e.user_id IN (SELECT id FROM bench_gone_user) "
    "OR e.visitor_id IN (SELECT id FROM bench_gone_visitor)"
)
LIST_GONE = "l.subject IN (SELECT id FROM bench_gone_key)"


def facts(url: str, owned: dict[str, str], present: set[str]) -> Facts:
    """Counts and digests of the copy (and the cache keys `present`) against the erased ids."""
    with transaction(url) as cursor:

        def one(statement: str) -> tuple:
            cursor.execute(statement)
            return cursor.fetchone()

        erased_keys = {row[0] for row in _all(cursor, "SELECT id FROM bench_gone_key")}
        result = Facts(
            events=one("SELECT count(*) FROM recommendations_event")[0],
            lists=one("SELECT count(*) FROM recommendations_storedlist")[0],
            gone_events=one(f"SELECT count(*) FROM recommendations_event e WHERE {GONE}")[0],
            gone_lists=one(f"SELECT count(*) FROM recommendations_storedlist l WHERE {LIST_GONE}")[0],
            pointers=one(
                f"SELECT count(*) FROM recommendations_event e WHERE NOT ({GONE}) "
                "AND e.recommendation_id IN (SELECT id FROM bench_gone_rec)"
            )[0],
            other_events=one(
                "SELECT count(*), count(DISTINCT shopper), sum(hashtext(event_id)::bigint), "
                "sum(hashtext(event_type || product_id || placement || variant)::bigint), "
                "count(*) FILTER (WHERE recommendation_id <> '') "
                f"FROM recommendations_event e WHERE NOT ({GONE})"
            ),
            other_lists=one(
                "SELECT count(*), sum(hashtext(recommendation_set_id || placement || subject || items::text)::bigint) "
                f"FROM recommendations_storedlist l WHERE NOT ({LIST_GONE})"
            ),
            keys_erased=sum(1 for k in present if owned.get(k) in erased_keys),
            keys_kept=sum(1 for k in present if k in owned and owned[k] not in erased_keys),
        )
    return result


def _all(cursor: Any, statement: str) -> list[tuple]:
    cursor.execute(statement)
    return cursor.fetchall()


def check(label: str, before: Facts, after: Facts, reported: dict[str, int], present: set[str]) -> list[str]:
    """Everything that is wrong after an erasure, in words; empty when it erased exactly those shoppers."""
    problems = []
    expected = {
        "events": before.gone_events,
        "stored_lists": before.gone_lists,
        "attribution_unlinked": before.pointers,
        "cache_keys": before.keys_erased,
    }
    for name, value in expected.items():
        if reported.get(name) != value:
            problems.append(f"{label}: reported {name} {reported.get(name)}, expected {value}")
    if (after.gone_events, after.gone_lists, after.pointers, after.keys_erased) != (0, 0, 0, 0):
        problems.append(
            f"{label}: left {after.gone_events} events, {after.gone_lists} lists, {after.pointers} pointers and "
            f"{after.keys_erased} cache keys of the erased shoppers"
        )
    if before.events - after.events != before.gone_events or before.lists - after.lists != before.gone_lists:
        problems.append(f"{label}: the tables lost other rows too ({before} -> {after})")
    kept_before, kept_after = list(before.other_events), list(after.other_events)
    kept_before[-1] -= before.pointers  # their pointers at erased blocks are blanked, nothing else changes
    if kept_before != kept_after or before.other_lists != after.other_lists:
        problems.append(f"{label}: other shoppers' rows changed: {before.other_events} -> {after.other_events}")
    if before.keys_kept != after.keys_kept:
        problems.append(f"{label}: other shoppers' cache keys {before.keys_kept} -> {after.keys_kept}")
    if not set(SHARED_KEYS) <= present:
        problems.append(f"{label}: shared cache keys went too: {sorted(set(SHARED_KEYS) - present)}")
    return problems


# --- the two erasures ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    label: str
    seconds: float
    peak_mb: float | None
    reported: dict[str, int]
    before: Facts
    after: Facts
    problems: list[str]


def watched(command: list[str], env: dict[str, str], max_seconds: float) -> tuple[float, float, int, str, str]:
    """Run a command: (wall seconds, its own peak RSS in MB from VmHWM polled every 20 ms, exit code, out, err).

    Not wait4's ru_maxrss: at exec Linux folds this (large) process's resident set into the child's maximum.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        peak = 0
        status = f"/proc/{process.pid}/status"
        deadline = started + max_seconds
        while process.poll() is None:
            try:
                with open(f"/proc/{process.pid}/cmdline", "rb") as handle:
                    execed = b"manage.py" in handle.read()
                with open(status) as handle:
                    found = next((int(line.split()[1]) for line in handle if line.startswith("VmHWM:")), 0)
                if execed:
                    peak = max(peak, found)
            except (OSError, ValueError):
                pass
            if time.perf_counter() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return seconds, peak / 1024, process.returncode, out.read(), err.read()


def run_command(url: str, cache_url: str, ids_file: Path, args: argparse.Namespace) -> tuple[float, float, dict]:
    env = {**django_env(url), "CACHE_URL": cache_url, "DJANGO_DEBUG": "0"}
    command = [sys.executable, "manage.py", "erase_shopper", "--file", str(ids_file)]
    if args.batch_size:
        command += ["--batch-size", args.batch_size]
    seconds, peak, code, out, err = watched(command, env, args.max_seconds)
    found = SUMMARY.search(out)
    if code != 0 or found is None:
        raise SystemExit(f"erase_shopper failed (exit {code}) after {seconds:.0f} s:\n{out}\n{err[-3000:]}")
    if "events" not in err or "100%" not in err:
        raise SystemExit(f"erase_shopper showed no progress bar:\n{err[-2000:]}")
    with transaction(url) as cursor:
        cursor.execute(
            "SELECT counts, subjects, jsonb_array_length(subject_hashes) FROM recommendations_erasurerequest"
        )
        rows = cursor.fetchall()
    if len(rows) != 1:
        raise SystemExit(f"expected one ErasureRequest, found {len(rows)}")
    counts, subjects, hashes = rows[0]
    if subjects != args.erase or hashes != args.erase or int(found.group(1)) != args.erase:
        raise SystemExit(f"the erasure names {subjects} ids ({hashes} hashes), expected {args.erase}")
    if (int(found.group(2)), int(found.group(3))) != (counts["events"], counts["stored_lists"]):
        raise SystemExit(f"the summary line {found.group(0)!r} disagrees with the ErasureRequest {counts}")
    return seconds, peak, counts


def run_floor(url: str, cache_url: str, users: list[str], visitors: list[str]) -> tuple[float, dict]:
    """One transaction of plain statements on the ids (the merged visitors found the same way), then one SCAN;
    returns the wall seconds and the counts, with the seconds per stage as the command records them."""
    started = time.perf_counter()
    stages: dict[str, float] = {}

    def lap(stage: str) -> None:
        stages[stage] = time.perf_counter() - started - sum(stages.values())

    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT visitor_id FROM recommendations_event WHERE user_id = ANY(%s) AND visitor_id <> ''",
                [users],
            )
            every_visitor = sorted({*visitors, *(row[0] for row in cursor.fetchall())})
            shoppers = [f"u:{u}" for u in users] + [f"v:{v}" for v in every_visitor]
            lap("find")
            cursor.execute("CREATE TEMP TABLE floor_rec (id text) ON COMMIT DROP")
            cursor.execute(
                "WITH gone AS (DELETE FROM recommendations_event WHERE shopper = ANY(%s) OR user_id = ANY(%s) "
                "OR visitor_id = ANY(%s) RETURNING recommendation_id), "
                "kept AS (INSERT INTO floor_rec SELECT DISTINCT recommendation_id FROM gone "
                "WHERE recommendation_id <> '') "
                "SELECT count(*) FROM gone",
                [shoppers, users, every_visitor],
            )
            events = cursor.fetchone()[0]
            cursor.execute(
                "UPDATE recommendations_event SET recommendation_id = '' "
                "WHERE recommendation_id IN (SELECT id FROM floor_rec)"
            )
            unlinked = cursor.rowcount
            lap("events")
            cursor.execute("DELETE FROM recommendations_storedlist WHERE subject = ANY(%s)", [shoppers])
            lists = cursor.rowcount
        lap("stored_lists")  # and the commit
    finally:
        conn.close()
    erased = set(shoppers)
    client = redis_client(cache_url)
    doomed = [k for k in client.scan_iter(count=5000) if _owner(k.decode()[len(DJANGO_PREFIX) :]) in erased]
    deleted = sum(client.delete(*doomed[i : i + 1000]) for i in range(0, len(doomed), 1000))
    lap("cache")
    seconds = time.perf_counter() - started
    counts = {"events": events, "stored_lists": lists, "attribution_unlinked": unlinked, "cache_keys": deleted}
    return seconds, {**counts, "seconds": stages}


def _owner(key: str) -> str | None:
    """The shopper a per-shopper key of this bench names (their keys are short and safe: never a digest)."""
    for head in ("recommendations:block:", "recommendations:shopper:", "recommendations:refresh:"):
        if key.startswith(head):
            return ":".join(key[len(head) :].split(":", 2)[:2])
    if key.startswith("throttle:"):
        return ":".join(key.split(":", 4)[2:4])
    return None


# --- main ---------------------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    total_started = time.perf_counter()
    check_cache(args.cache_url, args.force)
    url = args.database_url
    marker = marker_for(args)
    create_and_migrate(url)
    if args.rebuild or not data_in_place(url, marker):
        print(f"building {database_name(url)} ...", file=sys.stderr)
        load(url, args, marker)
    users, visitors = erased_sample(args)
    load_at_start = os.getloadavg()[0]
    with transaction(url) as cursor:
        cursor.execute("SELECT DISTINCT shopper FROM recommendations_event")
        shopper_keys = sorted(row[0] for row in cursor.fetchall())
        cursor.execute("SELECT count(*) FROM recommendations_event")
        n_events = cursor.fetchone()[0]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-erase-") as tmp:
        ids_file = Path(tmp) / "ids.txt"
        ids_file.write_text(
            "# the shoppers to erase\n" + "".join(f"u:{u}\n" for u in users) + "".join(f"v:{v}\n" for v in visitors)
        )
        for run in range(args.runs):
            for label in ("erase_shopper", "floor"):
                copy = copy_database(url, "run")
                try:
                    owned = fill_cache(args.cache_url, shopper_keys, args.cached_share, args.seed)
                    load_expectation(copy, users, visitors)
                    before = facts(copy, owned, cache_keys(args.cache_url))
                    print(f"run {run + 1}: {label} ...", file=sys.stderr)
                    if label == "floor":
                        seconds, reported = run_floor(copy, args.cache_url, users, visitors)
                        peak = None
                    else:
                        seconds, peak, reported = run_command(copy, args.cache_url, ids_file, args)
                    present = cache_keys(args.cache_url)
                    after = facts(copy, owned, present)
                    problems = check(label, before, after, reported, present)
                    outcomes.append(Outcome(label, seconds, peak, reported, before, after, problems))
                finally:
                    drop_database(copy)
                    redis_client(args.cache_url).flushdb()
    report(outcomes, args, n_events, len(shopper_keys))
    print(f"load average (1 min): {load_at_start:.1f} before the runs, {os.getloadavg()[0]:.1f} after")
    print_footer(time.perf_counter() - total_started)
    problems = [p for o in outcomes for p in o.problems]
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def report(outcomes: list[Outcome], args: argparse.Namespace, n_events: int, n_keys: int) -> None:
    rows = []
    for at, o in enumerate(outcomes):
        r = o.reported
        floor = outcomes[at - at % 2 + 1].seconds  # this run's floor: the machine's load moves both alike
        rows.append(
            [
                f"{o.label} ({at // 2 + 1})",
                f"{args.erase:,}",
                f"{o.seconds:.1f}",
                f"{args.erase / o.seconds:,.0f}",
                f"{o.seconds / floor:.2f}",
                "-" if o.peak_mb is None else f"{o.peak_mb:.0f}",
                f"{r['events']:,}",
                f"{r['attribution_unlinked']:,}",
                f"{r['stored_lists']:,}",
                f"{r['cache_keys']:,}",
                "ok" if not o.problems else "FAILED",
            ]
        )
    print(
        f"{n_events:,} events of {n_keys:,} shopper keys ({args.shoppers:,} shoppers); "
        f"{outcomes[0].before.lists:,} stored lists; erasing {args.erase:,} shoppers"
    )
    header = [
        "erasure (run)",
        "shoppers",
        "seconds",
        "shoppers/s",
        "x its floor",
        "peak MB",
        "events",
        "pointers blanked",
        "stored lists",
        "cache keys",
        "check",
    ]
    print_table(header, rows, label_column=True)
    print()
    print("Where the time goes (seconds; the command's own from its ErasureRequest, the rest is Python and Django")
    print("start-up, reading the file and writing the record):")
    stages = ["find", "events", "stored_lists", "cache"]
    print_table(
        ["erasure (run)", *stages, "rest", "total"],
        [
            [
                f"{o.label} ({at // 2 + 1})",
                *(f"{o.reported['seconds'][stage]:.1f}" for stage in stages),
                f"{o.seconds - sum(o.reported['seconds'][stage] for stage in stages):.1f}",
                f"{o.seconds:.1f}",
            ]
            for at, o in enumerate(outcomes)
        ],
        label_column=True,
    )


if __name__ == "__main__":
    sys.exit(main())
