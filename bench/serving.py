"""Serving benchmark: server-side render time of recommendation blocks, next to a floor measured in the same run.

    .venv/bin/python bench/serving.py [--iterations 2000] [--shoppers 50000] [--products 20000] [--seed 7]

Creates and migrates a dedicated PostgreSQL database (DATABASE_URL, default .../rec_bench_serving; refused unless
its name contains "bench") and fills it with a synthetic shop, COPied straight into the tables: host products in
categories and brands with a power-law popularity (a few out of stock or inactive), their profiles, ~20 events per
shopper over the 90 days before loading, and one active recommendation set whose lists are written directly (not
by running the precompute): a for_you list of 50 per shopper with "because:<viewed product>" reasons, a similar
list of 20 per product, bought_together lists for 60 % of products, trending shop-wide and per category, and a
buy_again list. The data is deterministic for a seed and recorded in a marker table (`bench_serving_dataset`); a
rerun with the same arguments reuses it.

The cache is Redis (`--cache-url`, default CACHE_URL), as in production; the database must hold nothing but this
script's keys, and is emptied before and after the run. Everything is measured in-process with
`time.perf_counter`, rendering Django templates exactly as a page does: `{% recommendations "for_you" %}` with a
RequestFactory request carrying the visitor cookie (or a logged-in user), and the three blocks of
`templates/shop/product_detail.html` (similar, bought_together, recently_viewed) with the product object in the
context. Context processors and the rest of the page are left out: they cost the same with or without
recommendations. Per iteration, for a random shopper (and a popularity-weighted product for the page):

- miss: the shopper's cache version is bumped first (what any new event of theirs does), so every block is built;
- hit: a second request of the same shopper renders the same blocks from the cache;
- floor: per block, one indexed StoredList read + `catalog.get_products` of the ids the block showed + rendering
  `recommendations/block.html` with the same items (for recently_viewed, which has no stored list, the read is the
  shopper's for_you row);
- floor, raw read: the same with the stored-list read sent as plain SQL on a cursor instead of through the ORM (what
  serving itself does on PostgreSQL), for a floor without the ORM's cost;
- flush: what waits for the response to go out in production (VisitorMiddleware runs it in response.close(), off
  the page's time; reported apart): the impressions the miss queued, written in one INSERT, and the blocks it built,
  cached in one round trip. It runs before the hit, as it does before a shopper's next request.

Requests are marked as VisitorMiddleware marks them. The cases run in alternating order on the same shopper, so
load on a shared machine hits them alike. A first pass over every sampled shopper (untimed) warms the code and learns
each block's items and title for the floor (so the floor reads no rules while it is timed). A second, smaller pass
counts database queries and cache round trips per render. Results are kept in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg2
from common import (
    ROOT,
    add_database_arguments,
    args_marker,
    category_cdf,
    copy_events,
    copy_profiles,
    create_database,
    database_name,
    event_line,
    hardware,
    is_bench_database,
    loaded_at,
    print_table,
    setup_django,
    shopper_ids,
    transaction,
    vacuum_analyze,
    zipf_popularity,
)
from psycopg2 import sql

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_serving"
DEFAULT_CACHE_URL = "redis://127.0.0.1:6379/13"
HISTORY_DAYS = 90
TASTE_SHARE = 0.85
EVENT_MIX = [
    ("view", 0.70),
    ("add_to_cart", 0.12),
    ("favorite", 0.05),
    ("purchase", 0.06),
    ("remove_from_cart", 0.03),
    ("search", 0.04),
]
FOR_YOU_N, SIMILAR_N, TRENDING_N, BUY_AGAIN_N = 50, 20, 50, 500
SESSION_VIEWS = (10, 6, 2)  # minutes ago: three views in this session for the "live session" shoppers

FOR_YOU_SOURCE = '{% load recommendations %}{% recommendations "for_you" %}'
PRODUCT_PAGE = ROOT / "templates" / "shop" / "product_detail.html"


def product_page_source() -> str:
    """The recommendation tags of the shop's product page, as written there (similar, bought_together, ...)."""
    tags = re.findall(r"{% recommendations [^%]*%}", PRODUCT_PAGE.read_text())
    return "{% load recommendations %}" + "".join(tags)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000, help="timed renders per case (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed iterations per case before timing")
    parser.add_argument("--shoppers", type=int, default=50_000)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--categories", type=int, default=100)
    parser.add_argument("--events-per-shopper", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data and of the sampling")
    parser.add_argument("--regenerate", action="store_true", help="generate the data even if the marker matches")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop timing after this long")
    parser.add_argument("--force", action="store_true", help="use a database or cache that holds other data")
    add_database_arguments(parser, DEFAULT_DATABASE_URL)
    parser.add_argument("--cache-url", default=os.environ.get("CACHE_URL", DEFAULT_CACHE_URL))
    args = parser.parse_args()
    if args.iterations < 10:
        parser.error("--iterations must be at least 10")
    return args


# --- synthetic shop -----------------------------------------------------------------------------------------------


@dataclass
class Shop:
    category: np.ndarray  # per product (index = product id - 1)
    brand: np.ndarray
    popularity: np.ndarray
    price_cents: np.ndarray
    stock: np.ndarray
    active: np.ndarray
    shopper: np.ndarray  # per event: shopper number
    product: np.ndarray  # per event: product index, -1 for a search
    event_type: np.ndarray  # per event: index into EVENT_MIX
    seconds_before: np.ndarray  # per event: seconds before the load time
    tastes: np.ndarray  # per shopper: three favourite categories
    n_tastes: np.ndarray
    by_category: np.ndarray = field(repr=False)  # product indices sorted by category
    cdf: np.ndarray = field(repr=False)  # per-category popularity CDFs laid end to end (category k spans [k, k+1))
    global_cdf: np.ndarray = field(repr=False)

    def draw_in(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
        """One popularity-weighted product per entry of `categories`, inside that category."""
        at = np.searchsorted(self.cdf, categories + rng.random(categories.shape), side="right")
        return self.by_category[np.minimum(at, self.by_category.size - 1)]

    def draw_any(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        at = np.searchsorted(self.global_cdf, rng.random(shape), side="right")
        return np.minimum(at, self.global_cdf.size - 1)


def generate(args: argparse.Namespace) -> Shop:
    """Vectorised: a million events and the lists over them take seconds."""
    rng = np.random.default_rng(args.seed)
    p, c, s = args.products, args.categories, args.shoppers
    category = rng.integers(c, size=p)
    brand = (category * 3 + rng.integers(0, 5, size=p)) % (3 * c)  # a handful of brands per category
    popularity = zipf_popularity(rng, p)
    by_category, cdf = category_cdf(category, popularity, c)
    totals = np.bincount(category, weights=popularity, minlength=c)
    counts = rng.geometric(1.0 / args.events_per_shopper, size=s)
    shopper = np.repeat(np.arange(s), counts)
    n = int(shopper.size)
    tastes = rng.choice(c, size=(s, 3), p=totals / totals.sum())
    n_tastes = rng.integers(1, 4, size=s)
    shop = Shop(
        category=category,
        brand=brand,
        popularity=popularity,
        price_cents=rng.integers(200, 30_000, size=p),
        stock=np.where(rng.random(p) < 0.05, 0, rng.integers(1, 100, size=p)),
        active=rng.random(p) >= 0.02,
        shopper=shopper,
        product=np.empty(n, dtype=np.int64),
        event_type=rng.choice(len(EVENT_MIX), size=n, p=[share for _, share in EVENT_MIX]),
        seconds_before=np.zeros(n, dtype=np.int64),
        tastes=tastes,
        n_tastes=n_tastes,
        by_category=by_category,
        cdf=cdf,
        global_cdf=np.cumsum(popularity) / popularity.sum(),
    )
    taste = tastes[shopper, (rng.random(n) * n_tastes[shopper]).astype(np.int64)]
    in_taste = rng.random(n) < TASTE_SHARE
    shop.product[in_taste] = shop.draw_in(rng, taste[in_taste])
    shop.product[~in_taste] = shop.draw_any(rng, (int((~in_taste).sum()),))
    shop.product[shop.event_type == [name for name, _ in EVENT_MIX].index("search")] = -1
    centre = rng.random(s) * HISTORY_DAYS * 86_400
    spread = rng.exponential(5 * 86_400, size=n) * rng.choice([-1, 1], size=n)
    # Nothing inside the last hour: only the "live session" shoppers have a session, and they get it per run.
    shop.seconds_before = np.clip(centre[shopper] + spread, 3600, HISTORY_DAYS * 86_400).astype(np.int64)
    return shop


def _unique_rows(draws: np.ndarray, n: int, skip: np.ndarray | None = None) -> list[list[int]]:
    """Per row, the first `n` distinct values in draw order (leaving out `skip[row]`)."""
    rows = []
    for i, row in enumerate(draws.tolist()):
        seen = dict.fromkeys(row)
        if skip is not None:
            seen.pop(int(skip[i]), None)
        rows.append(list(seen)[:n])
    return rows


def _list_line(set_id: int, placement: str, subject: str, items: list[list[Any]]) -> str:
    return f"{set_id}\t{placement}\t{subject}\t{json.dumps(items, separators=(',', ':'))}\n"


def copy_catalog(cursor: Any, shop: Shop, loaded_at: datetime) -> None:
    c = int(shop.category.max()) + 1
    now = loaded_at.isoformat()
    categories = "".join(f"{k + 1}\tCategory {k}\tcat-{k}\n" for k in range(c))
    cursor.copy_expert("COPY shop_category (id, name, slug) FROM STDIN", io.StringIO(categories))
    brands = "".join(f"{b + 1}\tBrand {b}\tbrand-{b}\n" for b in range(3 * c))
    cursor.copy_expert("COPY shop_brand (id, name, slug) FROM STDIN", io.StringIO(brands))
    products, profiles = io.StringIO(), io.StringIO()
    sales = np.bincount(shop.product[shop.event_type == 3], minlength=shop.category.size)
    for i in range(shop.category.size):
        pid, cat, brand = i + 1, int(shop.category[i]), int(shop.brand[i])
        price = f"{shop.price_cents[i] / 100:.2f}"
        stock, active = int(shop.stock[i]), bool(shop.active[i])
        created = (loaded_at - timedelta(days=400 - i % 400)).isoformat()
        products.write(
            f"{pid}\tBench product {pid}\tbench-product-{pid}\tA product for the serving benchmark.\t{cat + 1}\t"
            f"{brand + 1}\t{price}\t{stock}\t{'t' if active else 'f'}\tf\t{created}\n"
        )
        profiles.write(
            f"{pid}\tBench product {pid}\tcat-{cat}\tBrand {brand}\t{price}\t{'t' if stock > 0 else 'f'}\t"
            f"{'t' if active else 'f'}\tA product for the serving benchmark.\t{created}\t{int(sales[i])}\t{now}\n"
        )
    products.seek(0)
    cursor.copy_expert(
        "COPY shop_product (id, name, slug, description, category_id, brand_id, price, stock, is_active, "
        "is_consumable, created_at) FROM STDIN",
        products,
    )
    copy_profiles(cursor, profiles)
    for table in ("shop_category", "shop_brand", "shop_product"):
        cursor.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT max(id) FROM {}))").format(
                sql.Literal(table), sql.Identifier(table)
            )
        )


def event_lines(shop: Shop, loaded_at: datetime, start: int, stop: int) -> Iterator[str]:
    """COPY rows of events [start, stop), each `seconds_before` the load time; carts and purchases valued."""
    names = [name for name, _ in EVENT_MIX]
    end = loaded_at.timestamp()
    rows = zip(
        shop.shopper[start:stop].tolist(),
        shop.product[start:stop].tolist(),
        shop.event_type[start:stop].tolist(),
        shop.seconds_before[start:stop].tolist(),
        strict=True,
    )
    for i, (number, product, kind, seconds) in enumerate(rows, start=start):
        moment = datetime.fromtimestamp(end - seconds, tz=UTC).isoformat()
        if product < 0:
            product_id, value, query = "", "\\N", "bench search"
        else:
            product_id, query = str(product + 1), ""
            value = f"{shop.price_cents[product] / 100:.2f}" if names[kind] in ("add_to_cart", "purchase") else "\\N"
        yield event_line(f"bench-{i:09d}", names[kind], shopper_ids(number), product_id, 1, value, query, moment)


def copy_lists(cursor: Any, shop: Shop, seed: int, loaded_at: datetime) -> int:
    """The lists a precompute would write, drawn from the same tastes; returns how many rows."""
    rng = np.random.default_rng(seed + 1)
    p, c, s = shop.category.size, int(shop.category.max()) + 1, shop.tastes.shape[0]
    cursor.execute(
        "INSERT INTO recommendations_recommendationset (created_at, activated_at, status, algorithm, stats) "
        "VALUES (%s, %s, 'active', 'bench', '{}') RETURNING id",
        [loaded_at, loaded_at],
    )
    (set_id,) = cursor.fetchone()
    buffer = io.StringIO()
    rows = 0
    servable = shop.active & (shop.stock > 0)
    # trending: the most popular servable products (noised), shop-wide and per category
    heat = shop.popularity * rng.lognormal(0, 0.5, size=p) * servable
    top = np.argsort(-heat)[:TRENDING_N]
    buffer.write(_list_line(set_id, "trending", "", [[str(i + 1), round(float(heat[i]), 6), "trending"] for i in top]))
    rows += 1
    for k in range(c):
        members = np.flatnonzero(shop.category == k)
        ranked = members[np.argsort(-heat[members])][:TRENDING_N]
        items = [[str(i + 1), round(float(heat[i]), 6), "trending"] for i in ranked if heat[i] > 0]
        buffer.write(_list_line(set_id, "trending", f"category:cat-{k}", items))
        rows += 1
    # similar: 20 neighbours per product, mostly from its own category
    draws = shop.draw_in(rng, np.repeat(shop.category[:, None], 40, axis=1))
    outside = rng.random(draws.shape) < 0.2
    draws[outside] = shop.draw_any(rng, (int(outside.sum()),))
    for i, row in enumerate(_unique_rows(draws, SIMILAR_N, skip=np.arange(p))):
        items = [[str(j + 1), round(1.0 / (1 + 0.1 * r), 6), "also"] for r, j in enumerate(row)]
        buffer.write(_list_line(set_id, "similar", str(i + 1), items))
        rows += 1
    # bought_together: 1-10 co-purchases for 60 % of products
    draws = shop.draw_in(rng, np.repeat(shop.category[:, None], 12, axis=1))
    sizes = rng.integers(1, 11, size=p)
    for i, row in enumerate(_unique_rows(draws, 10, skip=np.arange(p))):
        if rng.random() < 0.6:
            items = [[str(j + 1), round(0.5 / (1 + 0.2 * r), 6), f"together:{i + 1}"] for r, j in enumerate(row)]
            buffer.write(_list_line(set_id, "bought_together", str(i + 1), items[: sizes[i]]))
            rows += 1
    # buy_again: the shop's repeat list, [pid, score, "repeat", interval days]
    chosen = rng.choice(p, size=BUY_AGAIN_N, replace=False, p=shop.popularity / shop.popularity.sum())
    items = [
        [str(i + 1), round(float(rng.uniform(0.1, 0.6)), 6), "repeat", round(float(rng.uniform(7, 60)), 2)]
        for i in chosen
    ]
    buffer.write(_list_line(set_id, "buy_again", "", sorted(items, key=lambda r: -r[1])))
    rows += 1
    cursor.copy_expert(
        "COPY recommendations_storedlist (recommendation_set_id, placement, subject, items) FROM STDIN",
        io.StringIO(buffer.getvalue()),
    )
    # for_you: 50 per shopper from their tastes; the reason names a product they interacted with in that category
    anchors: dict[tuple[int, int], int] = {}
    for number, product in zip(shop.shopper.tolist(), shop.product.tolist(), strict=True):
        if product >= 0:
            anchors.setdefault((number, int(shop.category[product])), product)
    for start in range(0, s, 10_000):
        stop = min(start + 10_000, s)
        pick = (rng.random((stop - start, 120)) * shop.n_tastes[start:stop, None]).astype(np.int64)
        draws = shop.draw_in(rng, np.take_along_axis(shop.tastes[start:stop], pick, axis=1))
        outside = rng.random(draws.shape) > TASTE_SHARE
        draws[outside] = shop.draw_any(rng, (int(outside.sum()),))
        buffer = io.StringIO()
        for number, row in enumerate(_unique_rows(draws, FOR_YOU_N), start=start):
            items = []
            for r, j in enumerate(row):
                anchor = anchors.get((number, int(shop.category[j])))
                reason = f"because:{anchor + 1}" if anchor is not None and anchor != j else "for_you"
                items.append([str(j + 1), round(1.0 / (1 + 0.05 * r), 6), reason])
            buffer.write(_list_line(set_id, "for_you", shopper_ids(number)[2], items))
            rows += 1
        buffer.seek(0)
        cursor.copy_expert(
            "COPY recommendations_storedlist (recommendation_set_id, placement, subject, items) FROM STDIN", buffer
        )
    return rows


# --- database -----------------------------------------------------------------------------------------------------


def create_bench_database(url: str) -> None:
    if not is_bench_database(url):
        name = database_name(url)
        raise SystemExit(f"refusing to use {name!r}: name a *bench* database (this script replaces its data)")
    create_database(url)


def marker_for(args: argparse.Namespace) -> str:
    keys = ("shoppers", "products", "categories", "events_per_shopper", "seed")
    return args_marker(args, keys, mix=EVENT_MIX, v=1)


def data_in_place(url: str, marker: str) -> datetime | None:
    """The load time when the marker names this data and the tables still hold exactly what was generated."""
    return loaded_at(
        url,
        marker,
        "bench_serving_dataset",
        "marker text NOT NULL, loaded_at timestamptz, events bigint, lists bigint, products int",
        [
            "SELECT count(*) FROM recommendations_event WHERE event_id LIKE 'bench-0%'",
            "SELECT count(*) FROM recommendations_storedlist",
            "SELECT count(*) FROM shop_product",
        ],
    )


def load_data(url: str, args: argparse.Namespace, marker: str) -> datetime:
    started = time.perf_counter()
    loaded_at = datetime.now(UTC).replace(microsecond=0)
    shop = generate(args)
    print(f"generated {shop.shopper.size:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    with transaction(url) as cursor:
        cursor.execute("DELETE FROM bench_serving_dataset")
        cursor.execute(
            "TRUNCATE recommendations_event, recommendations_productprofile, recommendations_storedlist, "
            "recommendations_precomputerun, recommendations_recommendationset, shop_orderline, shop_order, "
            "shop_favorite, shop_product, shop_brand, shop_category"
        )
        copy_catalog(cursor, shop, loaded_at)
        copy_events(cursor, int(shop.shopper.size), lambda start, stop: event_lines(shop, loaded_at, start, stop))
        lists = copy_lists(cursor, shop, args.seed, loaded_at)
        cursor.execute(
            "INSERT INTO bench_serving_dataset (marker, loaded_at, events, lists, products) "
            "VALUES (%s, %s, %s, %s, %s)",
            [marker, loaded_at, int(shop.shopper.size), lists, int(shop.category.size)],
        )
    vacuum_analyze(url)
    print(f"loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return loaded_at


def setup_serving_django(args: argparse.Namespace) -> None:
    os.environ.pop("CELERY_BROKER_URL", None)  # nothing here sends a task; never touch a shared broker
    setup_django(
        DATABASE_URL=args.database_url,
        CACHE_URL=args.cache_url,
        DJANGO_SETTINGS_MODULE="shop.settings",
        DJANGO_DEBUG="0",  # no query log, as in production
        DJANGO_LOG_LEVEL="WARNING",
    )


def check_cache_empty(url: str, force: bool) -> None:
    import redis

    client = redis.Redis.from_url(url)
    foreign = [k for k in client.scan_iter(count=1000) if b":recommendations:" not in k]
    if foreign and not force:
        raise SystemExit(f"refusing to empty {url}: it holds {len(foreign)}+ keys that are not this script's")


# --- measuring ----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    template: Any
    pages: list[dict[str, Any]]  # per iteration: shopper, user_id, visitor_id, product (object or None)
    miss: list[float] = field(default_factory=list)
    hit: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    floor_raw: list[float] = field(default_factory=list)
    flush: list[float] = field(default_factory=list)
    blocks: dict[int, list[tuple[str, str, str, str, list[tuple]]]] = field(default_factory=dict)  # for the floor
    counts: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> (queries, cache trips) per render


class BenchUser:
    """Stands in for request.user: the tag reads only is_authenticated and pk."""

    is_authenticated = True

    def __init__(self, pk: str) -> None:
        self.pk = pk


def make_request(page: dict[str, Any]) -> Any:
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    from recommendations import tracking
    from recommendations.conf import rec_settings

    request = RequestFactory().get("/products/bench/")
    if page["visitor_id"]:
        request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = page["visitor_id"]
    request.user = BenchUser(page["user_id"]) if page["user_id"] else AnonymousUser()
    attr = getattr(tracking, "AFTER_RESPONSE_ATTR", None)  # absent in versions that cached each block at once
    if attr:
        request.__dict__[attr] = []  # as VisitorMiddleware does: what waits for the response waits for `finish`
    return request


def finish(request: Any) -> None:
    """What VisitorMiddleware runs once the response has gone out."""
    from recommendations import tracking

    if hasattr(tracking, "finish_request"):
        tracking.finish_request(request)
    else:
        tracking.flush_impressions(request)


def render(case: Case, page: dict[str, Any], request: Any) -> str:
    from django.template import Context

    return case.template.render(Context({"request": request, "product": page["product"]}))


_LABELS: dict[str, dict[int, str]] = {}


def card_labels() -> dict[str, dict[int, str]]:
    """Brand names and category slugs by id, read once. The shop's card shows a brand and a category initial; serving
    gives them from its profile hold, so the floor gives them from memory too (reading each card's brand and category
    rows instead would cost the floor two queries a card, 16 a block, and flatter the ratio)."""
    if not _LABELS:
        from shop.models import Brand, Category

        _LABELS["brand"] = dict(Brand.objects.values_list("pk", "name"))
        _LABELS["category"] = dict(Category.objects.values_list("pk", "slug"))
    return _LABELS


def render_floor(case: Case, index: int, request: Any, set_id: int, raw: bool = False) -> str:
    """Per block: one indexed StoredList read, the host products of the shown ids, block.html with those items."""
    from django.db import connection
    from django.template.loader import get_template

    from recommendations import catalog, serving
    from recommendations.models import StoredList
    from recommendations.templatetags.recommendations import block_context

    labels = card_labels()
    html = []
    for placement, title, list_placement, subject, items in case.blocks[index]:
        if raw:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT items FROM recommendations_storedlist "
                    "WHERE recommendation_set_id = %s AND placement = %s AND subject = %s",
                    [set_id, list_placement, subject],
                )
                row = cursor.fetchone()  # None where the block was filled by its fallback
                if row is not None:
                    json.loads(row[0])
        else:
            list(
                StoredList.objects.filter(
                    recommendation_set_id=set_id, placement=list_placement, subject=subject
                ).values_list("items", flat=True)[:1]
            )
        products = catalog.get_products(row[0] for row in items)
        block = serving.Block(placement, title=title)
        block.items = [serving.Recommendation(*row[:3], products[row[0]], *row[3:]) for row in items]
        for item in block.items:  # the card's brand and category initial, from memory as serving has them
            item.brand = labels["brand"].get(item.product.brand_id, "")
            item.category = labels["category"].get(item.product.category_id, "")
        html.append(get_template("recommendations/block.html").render(block_context(request, block, placement)))
    return "".join(html)


def learn_blocks(case: Case, touch: Callable[[str], None]) -> None:
    """Render every sampled page once (untimed): warms up, and records each block's items for its floor."""
    from recommendations import catalog, serving

    original = serving.attach_products
    seen: list[serving.Block] = []

    def recording(block: serving.Block) -> serving.Block:
        block = original(block)
        seen.append(block)
        return block

    serving.attach_products = recording
    try:
        for index, page in enumerate(case.pages):
            touch(page["shopper"])
            seen.clear()
            render(case, page, make_request(page))
            blocks = []
            for block in seen:
                if not block.items:
                    continue
                product_id = catalog.product_id_of(page["product"]) if page["product"] is not None else ""
                if block.placement in ("similar", "bought_together"):
                    list_placement, subject = block.placement, product_id
                else:  # for_you, and recently_viewed (no stored list): the shopper's for_you row
                    list_placement, subject = "for_you", page["shopper"]
                rows = [(i.product_id, i.score, i.reason, i.reason_text, i.source) for i in block.items]
                blocks.append((block.placement, block.title, list_placement, subject, rows))
            case.blocks[index] = blocks
    finally:
        serving.attach_products = original


def measure(case: Case, indices: list[int], set_id: int, touch: Callable[[str], None], record: bool) -> None:
    clock = time.perf_counter
    for index in indices:
        page = case.pages[index]

        def timed(action: Callable[[], Any]) -> float:
            started = clock()
            action()
            return (clock() - started) * 1000

        touch(page["shopper"])
        miss_request, hit_request = make_request(page), make_request(page)
        floor_request, raw_request = make_request(page), make_request(page)
        if index % 2:
            floor = timed(lambda: render_floor(case, index, floor_request, set_id))  # noqa: B023
            floor_raw = timed(lambda: render_floor(case, index, raw_request, set_id, raw=True))  # noqa: B023
        miss = timed(lambda: render(case, page, miss_request))  # noqa: B023
        flush = timed(lambda: finish(miss_request))  # noqa: B023
        hit = timed(lambda: render(case, page, hit_request))  # noqa: B023
        if not index % 2:
            floor_raw = timed(lambda: render_floor(case, index, raw_request, set_id, raw=True))  # noqa: B023
            floor = timed(lambda: render_floor(case, index, floor_request, set_id))  # noqa: B023
        if record:
            case.miss.append(miss)
            case.hit.append(hit)
            case.floor.append(floor)
            case.floor_raw.append(floor_raw)
            case.flush.append(flush)


def count_round_trips(case: Case, indices: list[int], set_id: int, touch: Callable[[str], None]) -> None:
    """Queries and cache round trips per render, on a few pages (untimed: counting slows every call)."""
    from django.core.cache import caches
    from django.db import connection

    client = caches["default"]._cache
    counted = {"queries": 0, "cache": 0}
    names = ("get", "get_many", "set", "set_many", "add", "delete", "delete_many", "incr", "touch", "has_key")
    originals = {name: getattr(client, name) for name in names}

    def counting(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*a: Any, **kw: Any) -> Any:
            counted["cache"] += 1
            return method(*a, **kw)

        return call

    def count_query(execute: Callable[..., Any], *a: Any) -> Any:
        counted["queries"] += 1
        return execute(*a)

    totals = {kind: [0, 0] for kind in ("miss", "hit", "floor", "floor_raw", "flush")}
    for name, method in originals.items():
        setattr(client, name, counting(method))
    try:
        with connection.execute_wrapper(count_query):
            for index in indices:
                page = case.pages[index]
                touch(page["shopper"])
                requests = {kind: make_request(page) for kind in ("miss", "hit", "floor", "floor_raw")}
                actions = {
                    "miss": lambda: render(case, page, requests["miss"]),  # noqa: B023
                    "flush": lambda: finish(requests["miss"]),  # noqa: B023
                    "hit": lambda: render(case, page, requests["hit"]),  # noqa: B023
                    "floor": lambda: render_floor(case, index, requests["floor"], set_id),  # noqa: B023
                    "floor_raw": lambda: render_floor(case, index, requests["floor_raw"], set_id, raw=True),  # noqa: B023
                }
                for kind, action in actions.items():
                    counted.update(queries=0, cache=0)
                    action()
                    totals[kind][0] += counted["queries"]
                    totals[kind][1] += counted["cache"]
    finally:
        for name in names:
            client.__dict__.pop(name, None)
    case.counts = {kind: (q / len(indices), c / len(indices)) for kind, (q, c) in totals.items()}


# --- the run ------------------------------------------------------------------------------------------------------


def prepare_run(shop_seed: int, args: argparse.Namespace) -> tuple[dict[str, Case], int]:
    """Sample the pages of each case, give the live-session shoppers their session, compile the templates."""
    from django.db import connection
    from django.template import Template
    from django.utils import timezone

    from recommendations import serving, tracking
    from recommendations.models import Event, RecommendationSet, StoredList
    from shop.models import Product

    with connection.cursor() as cursor:  # what earlier runs left: their sessions and impressions
        cursor.execute(
            "DELETE FROM recommendations_event WHERE event_id LIKE 'bench-session-%%' OR event_type = 'impression'"
        )
    set_id = RecommendationSet.objects.get(status="active").pk
    rng = np.random.default_rng(shop_seed + 2)
    n = args.iterations + args.warmup
    numbers = rng.choice(args.shoppers, size=3 * n, replace=False)

    def page(number: int, product: Any = None) -> dict[str, Any]:
        user_id, visitor_id, key = shopper_ids(int(number))
        return {"shopper": key, "user_id": user_id, "visitor_id": visitor_id, "product": product}

    # Product pages are opened as often as the products were viewed in the history.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.product_id, count(*) FROM recommendations_event e JOIN shop_product p "
            "ON p.id::text = e.product_id WHERE e.event_type = 'view' AND p.is_active GROUP BY e.product_id "
            "ORDER BY e.product_id"
        )
        viewed = cursor.fetchall()
    weights = np.array([count for _, count in viewed], dtype=np.float64)
    product_pks = rng.choice([int(pid) for pid, _ in viewed], size=n, p=weights / weights.sum())
    by_pk = Product.objects.select_related("category", "brand").in_bulk(sorted(set(product_pks.tolist())))
    for_you = Template(FOR_YOU_SOURCE)
    cases = {
        "for_you": Case("for_you", for_you, [page(x) for x in numbers[:n]]),
        "for_you, live session": Case("for_you, live session", for_you, [page(x) for x in numbers[n : 2 * n]]),
        "product page": Case(
            "product page",
            Template(product_page_source()),
            [page(x, by_pk[int(p)]) for x, p in zip(numbers[2 * n :], product_pks, strict=True)],
        ),
    }
    # The live-session shoppers viewed three products of their own list in the last minutes.
    lists = dict(
        StoredList.objects.filter(
            recommendation_set_id=set_id,
            placement="for_you",
            subject__in=[p["shopper"] for p in cases["for_you, live session"].pages],
        ).values_list("subject", "items")
    )
    now, events = timezone.now(), []
    for number, p in enumerate(cases["for_you, live session"].pages):
        items = lists.get(p["shopper"], [])
        for k, minutes in enumerate(SESSION_VIEWS):
            if len(items) > 10 + k:
                events.append(
                    tracking.build_event(
                        "view",
                        user_id=p["user_id"],
                        visitor_id=p["visitor_id"],
                        product_id=items[int(rng.integers(10, len(items)))][0],
                        occurred_at=now - timedelta(minutes=minutes),
                        event_id=f"bench-session-{number}-{k}",
                    )
                )
    Event.objects.bulk_create(events)
    serving.forget_active_set()
    return cases, set_id


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    return float(np.percentile(np.asarray(values), q))


def machine(load_at_start: float) -> list[str]:
    from django import get_version
    from django.core.cache import cache
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (pg,) = cursor.fetchone()
        cursor.execute("SHOW shared_buffers")
        (buffers,) = cursor.fetchone()
    redis_version = cache._cache.get_client().info("server").get("redis_version", "?")
    return [
        f"{hardware()}; 1-minute load average {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        f"Python {platform.python_version()}, Django {get_version()}, psycopg2 {psycopg2.__version__.split()[0]}, "
        f"PostgreSQL {pg} (shared_buffers {buffers}), Redis {redis_version} (cache), all on this machine",
    ]


def report(
    cases: dict[str, Case], loaded_at: datetime, args: argparse.Namespace, started: datetime, load: float
) -> None:
    print(f"serving benchmark, {started:%Y-%m-%d %H:%M} UTC; data loaded {loaded_at:%Y-%m-%d %H:%M} UTC")
    for line in machine(load):
        print(f"  {line}")
    tags = re.findall(r'{% recommendations "(\w+)"', product_page_source())
    print(f"  product page: {', '.join(tags)} as in {PRODUCT_PAGE.relative_to(ROOT)}")
    print(
        f"  {args.shoppers:,} shoppers, {args.products:,} products, {args.categories} categories, "
        f"~{args.events_per_shopper:g} events per shopper; {args.iterations:,} timed iterations per case"
        f" after {args.warmup} untimed"
    )
    header = [
        "case",
        "renders",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "p50 / floor",
        "p99 / floor",
        "p50 / raw floor",
        "queries",
        "cache trips",
    ]
    rows = []
    for case in cases.values():
        floor50, floor99 = percentile(case.floor, 50), percentile(case.floor, 99)
        raw50 = percentile(case.floor_raw, 50)
        for kind in ("floor", "floor_raw", "miss", "hit", "flush"):
            values = getattr(case, kind)
            p50, p99 = percentile(values, 50), percentile(values, 99)
            queries, trips = case.counts.get(kind, (float("nan"), float("nan")))
            ratio = kind in ("miss", "hit")
            rows.append(
                [
                    f"{case.name}: {kind.replace('_raw', ', raw read')}",
                    f"{len(values):,}",
                    f"{p50:.2f}",
                    f"{p99:.2f}",
                    f"{np.mean(values):.2f}",
                    f"{p50 / floor50:.2f}" if ratio else "",
                    f"{p99 / floor99:.2f}" if ratio else "",
                    f"{p50 / raw50:.2f}" if ratio else "",
                    f"{queries:.1f}",
                    f"{trips:.1f}",
                ]
            )
    print_table(header, rows, label_column=True)
    print(
        "(miss: the shopper's version bumped first, every block built; hit: the same page again from the cache; "
        "floor: per block one indexed StoredList read + get_products + block.html with the same items (raw read: the "
        "StoredList read as plain SQL); flush: "
        "after the miss's response: its impressions in one INSERT and, where serving defers it, caching its blocks. "
        "queries / cache trips: per render, counted on a separate untimed pass.)"
    )


def main() -> int:
    args = parse_args()
    started_at, load = datetime.now(UTC), os.getloadavg()[0]
    create_bench_database(args.database_url)
    setup_serving_django(args)
    from django.core.cache import cache
    from django.core.management import call_command

    from recommendations import serving

    print(f"preparing {args.database_url} ...", file=sys.stderr)
    call_command("migrate", interactive=False, verbosity=0)
    check_cache_empty(args.cache_url, args.force)
    marker = marker_for(args)
    loaded_at = None if args.regenerate else data_in_place(args.database_url, marker)
    if loaded_at is None:
        loaded_at = load_data(args.database_url, args, marker)
    else:
        print("the data is already loaded; not regenerating", file=sys.stderr)
    cache.clear()
    try:
        cases, set_id = prepare_run(args.seed, args)

        def touch(shopper: str) -> None:
            serving.touch_shoppers([shopper])

        deadline = time.monotonic() + args.max_seconds
        for case in cases.values():
            print(f"{case.name}: first pass over {len(case.pages):,} pages ...", file=sys.stderr)
            learn_blocks(case, touch)
        for case in cases.values():
            measure(case, list(range(args.warmup)), set_id, touch, record=False)
        timed = list(range(args.warmup, args.warmup + args.iterations))
        for start in range(0, len(timed), 100):  # the cases take turns, so a busy minute hits all of them
            if time.monotonic() > deadline:
                print("--max-seconds reached; reporting what was measured", file=sys.stderr)
                break
            for case in cases.values():
                measure(case, timed[start : start + 100], set_id, touch, record=True)
        for case in cases.values():
            count_round_trips(case, timed[:100], set_id, touch)
        report(cases, loaded_at, args, started_at, load)
    finally:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM recommendations_event WHERE event_id LIKE 'bench-session-%%' OR event_type = 'impression'"
            )
        cache.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
