"""Retrain benchmark: one `training.run_training()` end to end on ~1M events (100k shoppers, 20k products).

    .venv/bin/python bench/retrain.py [--runs 1] [--rebuild] [--shoppers 100000] [--products 20000]
                                      [--events 1000000] [--seed 7] [--candidates ease_lowrank,...]

Target: a retrain with the default CANDIDATES in at most 2 minutes on 2 cores.

Data: a synthetic shop generated with numpy (every draw vectorised) and COPied into a dedicated PostgreSQL database
(DATABASE_URL, default .../rec_bench_retrain), 60 days of history:

- 20,000 products in 40 categories, each with a word pool for names and descriptions; 400 brands, each selling in
  one to three categories at its own price tier; prices log-normal around a category's level; 85 % of products
  created up to two years before the window, 15 % arriving during it (with a novelty boost to their popularity);
  popularity Zipf-like (exponent 1) within each category; 1 % inactive, 5 % out of stock.
- 100,000 shoppers (a third logged in, the rest anonymous visitors), 40 % present from the start and the rest
  arriving during the window; each has a main and one or two side categories (20 % switch their main category half
  way), a price preference and half of them a favourite brand.
- Sessions (geometric count per shopper, sized so the whole shop holds about `--events` events), each in one
  category (55 % the main one, 25 % a side one, 20 % anywhere by popularity), a quarter opening with a search.
  Each view draws three products of the category by popularity and keeps one with odds in proportion to the
  shopper's price and brand affinity (products not yet created cannot be seen); views lead to favourites (3 %),
  carts (6-16 %, more for well-matched products), carts to purchases (45 %, at the end of the session) or
  removals.

The data is deterministic for a seed and recorded in a marker table (`bench_dataset`); a rerun that finds the same
marker and row counts reuses it (`--rebuild` regenerates). Before each timed run the training and precompute
history (runs, sets, lists) is emptied, so every run is a shop's first retrain ("no model was serving").

Each run is `run_training()` in a fresh Python process (Django set up, nothing imported beyond what setup needs),
with RECOMMENDATIONS_MODEL_DIR a temporary directory and CELERY_BROKER_URL an empty Redis database that no worker
reads: the precompute a passing gate enqueues is only queued (and the queue is emptied afterwards), so it is not
in the figures. *call s* is the wall time of the `run_training()` call; *process s* adds the interpreter and
Django start-up; *peak MB* is the process's own high-water resident set (VmHWM, read at its end). Stage seconds
are the run's own `TrainingRun.stage_seconds`. Results are kept in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    add_database_arguments,
    category_cdf,
    copy_events,
    copy_profiles,
    create_and_migrate,
    data_in_place,
    django_env,
    event_line,
    is_bench_database,
    peak_mb,
    print_footer,
    print_table,
    query_one,
    replace_dataset,
    run_measured,
    setup_django,
    shopper_ids,
    transaction,
    truncate,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_retrain"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
TARGET_SECONDS = 120.0
HISTORY_END = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so the data (and its marker) never depends on the clock
DAYS = 60
N_CATEGORIES = 40
N_BRANDS = 400
GENERATOR_VERSION = 1
# Emptied before each run, with what references them (experiments name training runs): the bench database only.
HISTORY_TABLES = ("trainingrun", "precomputerun", "storedlist", "recommendationset")

CATEGORY_WORDS = [
    ("coffee", "bean roast espresso arabica grinder crema"),
    ("tea", "leaf green herbal oolong matcha infusion"),
    ("running-shoes", "running trail sole cushion marathon stride"),
    ("rain-jackets", "jacket rain waterproof hood shell breathable"),
    ("desk-lamps", "lamp light desk bulb dimmer warm"),
    ("mugs", "mug ceramic cup handle glaze stoneware"),
    ("novels", "novel story paperback fiction chapter author"),
    ("soap", "soap olive bath scent lather natural"),
    ("yoga", "yoga mat grip stretch cork balance"),
    ("backpacks", "backpack pack strap zip laptop travel"),
    ("cables", "usb cable charger braided fast connector"),
    ("headphones", "headphones wireless bass noise cancelling ear"),
    ("teapots", "teapot cast iron pour kettle brew"),
    ("socks", "socks wool cotton pair warm ankle"),
    ("candles", "candle wax wick soy scented jar"),
    ("notebooks", "notebook paper dotted lined journal cover"),
    ("pens", "pen ink fountain gel rollerball nib"),
    ("knives", "knife chef steel blade santoku edge"),
    ("pans", "pan skillet nonstick cast iron saute"),
    ("plants", "plant pot succulent fern indoor leafy"),
    ("toys", "toy wooden puzzle blocks kids play"),
    ("board-games", "board game cards dice strategy family"),
    ("bikes", "bike cycling helmet lights saddle pedal"),
    ("tents", "tent camping shelter poles sleeping outdoor"),
    ("watches", "watch strap dial quartz leather steel"),
    ("sunglasses", "sunglasses polarized lens frame uv shade"),
    ("skincare", "cream serum moisturizer face spf hydrating"),
    ("haircare", "shampoo conditioner hair argan repair"),
    ("dog", "dog leash collar chew treats bed"),
    ("cat", "cat scratcher litter toy catnip bowl"),
    ("baking", "baking flour tin whisk sourdough proofing"),
    ("chocolate", "chocolate dark cocoa praline bar truffle"),
    ("wine-glasses", "glass wine crystal stem decanter tumbler"),
    ("towels", "towel cotton bath soft absorbent terry"),
    ("bedding", "duvet pillow linen sheet cover cotton"),
    ("rugs", "rug wool woven runner jute floor"),
    ("speakers", "speaker bluetooth portable sound bass stereo"),
    ("keyboards", "keyboard mechanical switches keycaps wireless layout"),
    ("gardening", "garden gloves trowel seeds hose pruner"),
    ("puzzles", "puzzle jigsaw pieces picture landscape challenge"),
]
ADJECTIVES = [
    "classic",
    "everyday",
    "premium",
    "compact",
    "deluxe",
    "essential",
    "original",
    "modern",
    "vintage",
    "light",
    "pro",
    "mini",
]
FUNNEL = {"favorite": 0.03, "cart_base": 0.06, "cart_affinity": 0.10, "purchase": 0.45, "remove": 0.12}
SEARCH_SHARE = 0.25
VIEWS_PER_SESSION = 3.0
MAIN_SHARE = 0.55  # sessions in the main category; up to TASTE_SHARE in a side one, the rest anywhere
TASTE_SHARE = 0.8
SWITCH_SHARE = 0.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="retrains to time on the same data (each a fresh process)")
    parser.add_argument("--shoppers", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=1_000_000, help="about this many events in all")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    parser.add_argument("--rebuild", action="store_true", help="generate the data even if the marker matches")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="kill a retrain that runs longer")
    add_database_arguments(parser, DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--broker-url", default=DEFAULT_BROKER_URL, help="an empty Redis database no worker reads (queue only)"
    )
    parser.add_argument(
        "--candidates", help="comma-separated candidate names to fit (default: the CANDIDATES setting), e.g. one alone"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not is_bench_database(args.database_url):
        parser.error("the database name must contain 'bench' (its tables are emptied)")
    if args.runs < 1 or min(args.shoppers, args.products, args.events) < 1:
        parser.error("--runs, --shoppers, --products and --events must be at least 1")
    return args


# --- the synthetic shop -------------------------------------------------------------------------------------------


class Shop:
    """Column arrays of the catalog and the event log (times in seconds from the window's start)."""

    def __init__(self, **arrays: Any) -> None:
        self.__dict__.update(arrays)


def generate(shoppers: int, products: int, events: int, seed: int) -> Shop:
    """The shop described in the module docstring; a few seconds for a million events."""
    rng = np.random.default_rng(seed)
    c, p, s = N_CATEGORIES, products, shoppers
    window = DAYS * 86_400.0

    # Catalog: brands sell in one to three categories at their own price tier.
    category = rng.integers(c, size=p)
    brand_categories = rng.integers(c, size=(N_BRANDS, 3))
    brand_spread = rng.integers(1, 4, size=N_BRANDS)
    selling = (brand_categories[:, :, None] == np.arange(c)[None, None, :]) & (
        np.arange(3)[None, :, None] < brand_spread[:, None, None]
    )
    brand = np.empty(p, dtype=np.int64)
    for k in range(c):
        members = np.flatnonzero(category == k)
        sellers = np.flatnonzero(selling[:, :, k].any(axis=1))
        if sellers.size == 0:
            sellers = rng.integers(N_BRANDS, size=3)
        brand[members] = rng.choice(sellers, size=members.size)
    category_level = rng.uniform(1.5, 5.5, size=c)
    brand_tier = rng.normal(0.0, 0.4, size=N_BRANDS)
    log_price = category_level[category] + brand_tier[brand] + rng.normal(0.0, 0.35, size=p)
    price_cents = np.maximum(np.round(np.exp(log_price) * 100), 99).astype(np.int64)
    count_c = np.maximum(np.bincount(category, minlength=c), 1)
    mean_c = np.bincount(category, weights=log_price, minlength=c) / count_c
    std_c = np.sqrt(np.bincount(category, weights=(log_price - mean_c[category]) ** 2, minlength=c) / count_c) + 1e-6
    price_z = (log_price - mean_c[category]) / std_c[category]
    new = rng.random(p) < 0.15
    created = np.where(new, rng.uniform(0, window, size=p), -rng.uniform(0, 700 * 86_400.0, size=p))
    rank = np.empty(p, dtype=np.int64)
    for k in range(c):  # Zipf within each category: rank 1 is the category's best seller
        members = np.flatnonzero(category == k)
        rank[members] = rng.permutation(members.size) + 1
    popularity = 1.0 / rank * np.where(new, 2.0, 1.0)
    order, cdf = category_cdf(category, popularity, c)
    category_share = np.bincount(category, weights=popularity, minlength=c)
    category_share /= category_share.sum()

    # Shoppers: a main and one or two side categories, a price preference, often a favourite brand.
    tastes = rng.choice(c, size=(s, 3), p=category_share)
    n_side = rng.integers(1, 3, size=s)
    switched = rng.random(s) < SWITCH_SHARE
    new_main = rng.choice(c, size=s, p=category_share)
    price_pref = rng.normal(0.0, 1.0, size=s)
    has_brand = rng.random(s) < 0.5
    favourite_brand = brand[order[np.minimum(np.searchsorted(cdf, tastes[:, 0] + rng.random(s)), p - 1)]]
    arrival = np.where(rng.random(s) < 0.4, 0.0, rng.uniform(0, window, size=s))

    # Sessions, sized to about `events` events in all; each in one category.
    cart_rate = FUNNEL["cart_base"] + FUNNEL["cart_affinity"] * 0.5
    per_view = 1 + FUNNEL["favorite"] + cart_rate * (1 + FUNNEL["purchase"] + FUNNEL["remove"] * 0.55)
    per_session = VIEWS_PER_SESSION * per_view + SEARCH_SHARE
    n_sessions = rng.geometric(1.0 / max(events / s / per_session, 1.0), size=s)
    session_shopper = np.repeat(np.arange(s), n_sessions)
    n = session_shopper.size
    start = arrival[session_shopper] + rng.random(n) * (window - 3600 - arrival[session_shopper])
    late = start > ((arrival + window) / 2)[session_shopper]
    main = np.where(switched[session_shopper] & late, new_main[session_shopper], tastes[session_shopper, 0])
    side = tastes[session_shopper, 1 + (rng.random(n) * n_side[session_shopper]).astype(np.int64)]
    roll = rng.random(n)
    session_category = np.where(roll < MAIN_SHARE, main, side)
    anywhere = roll >= TASTE_SHARE
    session_category[anywhere] = rng.choice(c, size=int(anywhere.sum()), p=category_share)

    # Views: one of three popularity-drawn products of the session's category, odds by affinity.
    views = rng.geometric(1.0 / VIEWS_PER_SESSION, size=n)
    view_session = np.repeat(np.arange(n), views)
    m = view_session.size
    gaps = rng.exponential(45.0, size=m) + 5.0
    first = np.r_[0, np.cumsum(views)[:-1]]
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first] - gaps[first], views)
    view_time = start[view_session] + offset
    view_shopper = session_shopper[view_session]
    draws = order[np.minimum(np.searchsorted(cdf, session_category[view_session, None] + rng.random((m, 3))), p - 1)]
    affinity = np.exp(-0.5 * ((price_z[draws] - price_pref[view_shopper, None]) / 0.8) ** 2)
    affinity *= np.where(has_brand[view_shopper, None] & (brand[draws] == favourite_brand[view_shopper, None]), 4, 1)
    affinity *= created[draws] <= view_time[:, None]  # a product not yet created cannot be seen
    total = affinity.sum(axis=1)
    pick = np.minimum((np.cumsum(affinity, axis=1) < (rng.random(m) * total)[:, None]).sum(axis=1), 2)
    seen = total > 0
    view_item = draws[np.arange(m), pick][seen]
    view_affinity = np.minimum(affinity[np.arange(m), pick], 1.0)[seen]
    view_session, view_shopper, view_time = view_session[seen], view_shopper[seen], view_time[seen]
    m = view_item.size

    # The funnel: favourites and carts right after the view, purchases and removals at the end of the session.
    session_end = np.zeros(n)
    np.maximum.at(session_end, view_session, view_time)
    favorite = rng.random(m) < FUNNEL["favorite"]
    cart = rng.random(m) < FUNNEL["cart_base"] + FUNNEL["cart_affinity"] * view_affinity
    bought = cart & (rng.random(m) < FUNNEL["purchase"])
    removed = cart & ~bought & (rng.random(m) < FUNNEL["remove"])
    searched = rng.random(n) < SEARCH_SHARE
    parts = {
        "view": (view_shopper, view_item, view_time),
        "favorite": (view_shopper[favorite], view_item[favorite], view_time[favorite] + 3.0),
        "add_to_cart": (view_shopper[cart], view_item[cart], view_time[cart] + rng.uniform(10, 90, int(cart.sum()))),
        "remove_from_cart": (view_shopper[removed], view_item[removed], session_end[view_session[removed]] + 120.0),
        "purchase": (
            view_shopper[bought],
            view_item[bought],
            session_end[view_session[bought]] + rng.uniform(120, 600, int(bought.sum())),
        ),
        "search": (session_shopper[searched], np.full(int(searched.sum()), -1), start[searched] - 20.0),
    }
    names = list(parts)
    seconds = np.clip(np.concatenate([when for _, _, when in parts.values()]), 0, window - 1)
    event_order = np.argsort(seconds, kind="stable")
    event_type = np.concatenate([np.full(who.size, code) for code, (who, _, _) in enumerate(parts.values())])
    event_type = event_type[event_order]
    quantity = np.ones(event_type.size, dtype=np.int64)
    for name, high in (("purchase", 4), ("add_to_cart", 3)):
        mask = event_type == names.index(name)
        quantity[mask] = rng.integers(1, high, size=int(mask.sum()))
    return Shop(
        category=category,
        brand=brand,
        price_cents=price_cents,
        created_seconds=created,
        active=rng.random(p) >= 0.01,
        in_stock=rng.random(p) >= 0.05,
        adjective=rng.integers(len(ADJECTIVES), size=p),
        words=rng.integers(6, size=(p, 4)),
        type_names=names,
        shopper=np.concatenate([who for who, _, _ in parts.values()])[event_order],
        item=np.concatenate([what for _, what, _ in parts.values()])[event_order],
        seconds=seconds[event_order],
        event_type=event_type,
        quantity=quantity,
        n_sessions=n,
    )


def _brand_name(number: int) -> str:
    syllables = ["nor", "ber", "ka", "lu", "ven", "tor", "mi", "sa", "ro", "da", "fin", "el", "gar", "po", "zen", "ri"]
    return (syllables[number % 16] + syllables[(number // 16) % 16] + syllables[(number // 7) % 16]).title()


def _timestamps(seconds: np.ndarray) -> list[str]:
    """ISO timestamps (UTC, milliseconds) for seconds after the window's start, vectorised."""
    start = np.datetime64(HISTORY_END.replace(tzinfo=None), "ms") - np.timedelta64(DAYS, "D")
    moments = start + np.round(seconds * 1000).astype("timedelta64[ms]")
    return [f"{t}+00:00" for t in np.datetime_as_string(moments, unit="ms").tolist()]


def copy_products(cursor: Any, shop: Shop) -> None:
    buffer = io.StringIO()
    created = _timestamps(shop.created_seconds)
    updated = HISTORY_END.isoformat()
    for i in range(shop.category.size):
        slug, words = CATEGORY_WORDS[int(shop.category[i])]
        pool = words.split()
        noun = pool[int(shop.words[i, 0]) % len(pool)]
        brand = _brand_name(int(shop.brand[i]))
        name = f"{brand} {ADJECTIVES[int(shop.adjective[i])]} {noun}"
        text = f"A {ADJECTIVES[int(shop.adjective[i])]} {noun} by {brand}: " + " ".join(
            pool[int(j) % len(pool)] for j in shop.words[i, 1:]
        )
        buffer.write(
            f"{i + 1}\t{name}\t{slug}\t{brand}\t{shop.price_cents[i] / 100:.2f}\t{'t' if shop.in_stock[i] else 'f'}\t"
            f"{'t' if shop.active[i] else 'f'}\t{text}\t{created[i]}\t0\t{updated}\n"
        )
    copy_profiles(cursor, buffer)


def event_lines(shop: Shop, start: int, stop: int) -> Iterator[str]:
    """COPY rows of events [start, stop); a search's query is a word of some category, carts and purchases valued."""
    valued = {shop.type_names.index("add_to_cart"), shop.type_names.index("purchase")}
    rows = zip(
        shop.shopper[start:stop].tolist(),
        shop.item[start:stop].tolist(),
        shop.event_type[start:stop].tolist(),
        shop.quantity[start:stop].tolist(),
        _timestamps(shop.seconds[start:stop]),
        strict=True,
    )
    for i, (number, item, kind, quantity, moment) in enumerate(rows, start=start):
        if item < 0:
            words = CATEGORY_WORDS[i % N_CATEGORIES][1].split()
            product_id, value, query = "", "\\N", words[i % len(words)]
        else:
            product_id, query = str(item + 1), ""
            value = f"{shop.price_cents[item] * quantity / 100:.2f}" if kind in valued else "\\N"
        ids = shopper_ids(number)
        yield event_line(f"rb-{i:09d}", shop.type_names[kind], ids, product_id, quantity, value, query, moment)


# --- database -----------------------------------------------------------------------------------------------------


def marker_for(args: argparse.Namespace) -> str:
    spec = {"shoppers": args.shoppers, "products": args.products, "events": args.events, "seed": args.seed}
    return json.dumps({**spec, "generator": "bench/retrain.py", "v": GENERATOR_VERSION}, sort_keys=True)


def load_data(url: str, args: argparse.Namespace, marker: str) -> dict[str, Any]:
    started = time.perf_counter()
    shop = generate(args.shoppers, args.products, args.events, args.seed)
    generated = time.perf_counter() - started
    counts = {name: int((shop.event_type == i).sum()) for i, name in enumerate(shop.type_names)}
    n = int(shop.shopper.size)
    print(f"generated {n:,} events in {generated:.1f} s: {counts}", file=sys.stderr)

    def fill(cursor: Any) -> None:
        copy_products(cursor, shop)
        copy_events(cursor, n, lambda start, stop: event_lines(shop, start, stop))

    tables = [f"recommendations_{t}" for t in ("event", "productprofile", *HISTORY_TABLES)]
    replace_dataset(url, marker, tables, fill, (n, shop.category.size), cascade=True)
    seconds = time.perf_counter() - started
    print(f"loaded in {seconds:.1f} s", file=sys.stderr)
    return {"events": n, "sessions": shop.n_sessions, "by_type": counts, "seconds": seconds}


def forget_runs(url: str) -> None:
    """Every run starts as a shop's first retrain: no training, precompute or list history."""
    with transaction(url) as cursor:
        truncate(cursor, [f"recommendations_{t}" for t in HISTORY_TABLES], cascade=True)


def broker_keys(url: str) -> int:
    import redis

    return int(redis.Redis.from_url(url).dbsize())


def empty_broker(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


# --- the timed run --------------------------------------------------------------------------------------------------


def child(candidates: str | None = None) -> None:
    """In a fresh process: one run_training() call; its run id and the call's wall time as JSON on stdout."""
    setup_django()
    from recommendations.training.runs import run_training

    started = time.perf_counter()
    run = run_training(candidates=candidates.split(",") if candidates else None)
    seconds = time.perf_counter() - started
    print(json.dumps({"run_id": run.pk, "call_seconds": seconds, "status": run.status, "peak_mb": peak_mb()}))


def read_run(url: str, run_id: int) -> dict[str, Any]:
    columns = ["status", "chosen", "validation_ndcg", "test_metrics", "stage_seconds", "data_stats", "candidates"]
    columns += ["gate", "message"]
    row = query_one(url, f"SELECT {', '.join(columns)} FROM recommendations_trainingrun WHERE id = %s", [run_id])
    run = dict(zip(columns, row, strict=True))
    run["precompute"] = query_one(
        url, "SELECT count(*), string_agg(DISTINCT status, ',') FROM recommendations_precomputerun"
    )
    return run


def candidate_order(names: list[str]) -> list[str]:
    """Candidates in the CANDIDATES order (jsonb keeps keys in its own order), anything else (a blend) last."""
    setup_django()  # conf's defaults hold translatable strings, so it needs settings to import
    from recommendations.conf import DEFAULTS

    configured = list(DEFAULTS["CANDIDATES"])
    return sorted(names, key=lambda n: (configured.index(n) if n in configured else len(configured), n))


def stage_order(runs: list[dict[str, Any]]) -> list[str]:
    """Stages in the order a run goes through them."""
    seen = {stage for run in runs for stage in run["stage_seconds"]}
    head = ["load events", "clean", "features", "split"]
    tail = ["blend", "test", "gate", "refit", "save"]
    fits = [f"fit {name}" for name in candidate_order([s[4:] for s in seen if s.startswith("fit ")])]
    return [s for s in head if s in seen] + fits + [s for s in tail if s in seen]


def candidate_note(result: dict[str, Any]) -> str:
    fit = result.get("fit") or {}
    if "skipped" in fit:
        return f"left out: {fit['skipped']}"
    if "epochs_run" in fit:
        budget = f" (budget {fit['max_seconds']:g} s)" if "max_seconds" in fit else ""
        return f"{fit['epochs_run']} epoch(s), best {fit.get('best_epoch')}, stopped: {fit.get('stopped')}{budget}"
    if "weights" in result:
        return "weights " + ", ".join(f"{w:.2f}" for w in result["weights"])
    return ""


def main() -> int:
    args = parse_args()
    if args.child:
        child(args.candidates)
        return 0
    url = args.database_url
    started = time.perf_counter()
    print(f"preparing {url} ...", file=sys.stderr)
    create_and_migrate(url)
    marker = marker_for(args)
    built = None
    if args.rebuild or not data_in_place(url, marker):
        built = load_data(url, args, marker)
    else:
        print("the data is already loaded; not regenerating (--rebuild forces it)", file=sys.stderr)
    if broker_keys(args.broker_url):
        raise SystemExit(f"{args.broker_url} is not empty: name an unused Redis database with --broker-url")
    stored = query_one(url, "SELECT count(*), count(DISTINCT shopper) FROM recommendations_event")
    products = query_one(url, "SELECT count(*) FROM recommendations_productprofile")[0]

    runs: list[dict[str, Any]] = []
    for number in range(1, args.runs + 1):
        forget_runs(url)
        with tempfile.TemporaryDirectory(prefix="bench-retrain-models-") as models:
            env = {**django_env(url), "RECOMMENDATIONS_MODEL_DIR": models, "CELERY_BROKER_URL": args.broker_url}
            print(f"run_training (run {number}) ...", file=sys.stderr)
            command = [sys.executable, str(Path(__file__).resolve()), "--child", "--database-url", url]
            command += ["--candidates", args.candidates] if args.candidates else []
            try:
                result = run_measured(command, env, args.max_seconds)
            finally:
                empty_broker(args.broker_url)
        if result.returncode != 0:
            print(f"retrain failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}")
            return 1
        report = json.loads(result.stdout.strip().splitlines()[-1])
        run = read_run(url, report["run_id"])
        run.update(report, process_seconds=result.seconds)
        print(f"  {report['call_seconds']:.1f} s, {report['peak_mb']:.0f} MB, {run['message']}", file=sys.stderr)
        runs.append(run)

    header = ["run", "events stored", "events used", "shoppers", "products", "call s", "process s", "peak MB"]
    header += ["chosen", "valid NDCG@10", "test NDCG@10", "status"]
    rows = []
    for number, run in enumerate(runs, start=1):
        data = run["data_stats"]
        rows.append(
            [
                str(number),
                f"{stored[0]:,}",
                f"{data['events']:,}",
                f"{data['shoppers']:,}",
                f"{data['products']:,}",
                f"{run['call_seconds']:.1f}",
                f"{run['process_seconds']:.1f}",
                f"{run['peak_mb']:.0f}",
                run["chosen"],
                f"{run['validation_ndcg']:.4f}",
                f"{run['test_metrics'].get('ndcg', 0):.4f}",
                run["status"],
            ]
        )
    print_table(header, rows)
    print()
    stages = stage_order(runs)
    stage_rows = []
    for stage in [*stages, "stages total", "outside stages"]:
        row = [stage]
        for run in runs:
            total = sum(run["stage_seconds"].values())
            value = {"stages total": total, "outside stages": run["call_seconds"] - total}.get(
                stage, run["stage_seconds"].get(stage, 0.0)
            )
            row += [f"{value:.1f}", f"{100 * value / run['call_seconds']:.0f} %"]
        stage_rows.append(row)
    print_table(["stage", *(f"{h} {n}" for n in range(1, len(runs) + 1) for h in ("run s", "share"))], stage_rows)
    print("(TrainingRun.stage_seconds; a fit stage is the candidate's fit plus its validation scoring)")
    print()
    last = runs[-1]
    candidate_rows = []
    for name in candidate_order(list(last["candidates"])):
        result = last["candidates"][name]
        validation, test = result.get("validation") or {}, result.get("test") or {}
        candidate_rows.append(
            [
                name + (" *" if name == last["chosen"] else ""),
                f"{result.get('seconds', 0):.1f}" if "seconds" in result else "-",
                f"{validation['ndcg']:.4f}" if validation else "-",
                f"{test['ndcg']:.4f}" if test else "-",
                f"{test['recall']:.4f}" if test else "-",
                f"{test['coverage']:.3f}" if test else "-",
                candidate_note(result),
            ]
        )
    print_table(
        ["candidate", "fit s", "valid NDCG@10", "test NDCG@10", "test Recall@10", "coverage", "notes"], candidate_rows
    )
    print(f"(run {len(runs)}; * = chosen; gate: {last['gate'].get('reason', '')})")
    split = last["data_stats"].get("split", {})
    print(f"split: {json.dumps(split)}; cleaning: {json.dumps(last['data_stats'].get('cleaning', {}))}")
    precompute_runs, statuses = last["precompute"]
    print(f"precompute runs after the retrain: {precompute_runs} ({statuses}): queued on the broker, not run")
    if built:
        print(
            f"data built in {built['seconds']:.0f} s: {built['events']:,} events, {built['sessions']:,} sessions, "
            f"{json.dumps(built['by_type'])}"
        )
    print(
        f"data: {stored[0]:,} events from {stored[1]:,} shoppers, {products:,} products; target "
        f"{TARGET_SECONDS:.0f} s per retrain"
    )
    print_footer(time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
