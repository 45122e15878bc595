"""Push benchmark: composing a weekly-picks flow for 100,000 shoppers, in messages per second, next to a floor measured
in the same run (the same e-mail templates rendered with fixed products); and sending it, next to the same floor.

    .venv/bin/python bench/push.py [--shoppers 100000] [--products 20000] [--seed 7] [--max-seconds 1800]
                                   [--cache-url redis://127.0.0.1:6379/N] [--quick] [--profile] [--regenerate]

Data (numpy, COPied into a dedicated database, DATABASE_URL / --database-url, default .../rec_bench_push, refused
unless its name contains "bench"; a marker table `bench_push_dataset` makes a rerun reuse it):

- 20,000 host products in 100 categories and 300 brands (5 % out of stock, 2 % inactive) with their profiles;
- `--shoppers` users (auth_user, each with an e-mail address) who all opted in (an EmailConsent row each), with ~5
  events each over the 90 days before loading (views, a few add-to-carts and purchases; none in the last day, so no
  live session);
- one active recommendation set: a for_you list of 50 per shopper ("because:<a product they viewed>" reasons where
  one is in that category), a similar list of 20 per product, trending shop-wide and per category;
- a weekly_picks flow (`bench-weekly`, placement for_you, 8 products, at least 3 of the shopper's own).

The measuring runs in a child process of its own (so *peak MB* is its own high-water RSS, VmHWM, not this script's
numpy data), with DEBUG off, the cache on Redis (`--cache-url`, default CACHE_URL; emptied before and after, and it
must hold nothing but this script's keys) and `EMAIL_BACKEND` set to a hand-off backend: it does what Django's SMTP
backend does with each message before the socket (the envelope, `message.message().as_bytes()`), and drops the bytes.
So no network, and no mailbox in memory (Django's locmem backend would keep 100,000 messages). In order:

- compose: `send_due_messages(flow="bench-weekly", dry_run=True)`, all a send does before the claim: the trigger's
  audience, and per batch of EMAIL_BATCH_SIZE the taken keys, consent, addresses, caps, `compose.compose` (the serving
  pipeline for the whole batch: one read-ahead, one render pass, one read of the products), `compose.render` (signed
  links, templates, subject) and the message object; it writes and sends nothing. The issue's target (<= 2 x the
  floor) is this path's;
- send: `send_due_messages(flow="bench-weekly")`, the real thing: the same, then per e-mail the claim (the Message
  row, committed), the hand-off and the row marked sent, and per batch the impressions stored;
- floor: the flow's HTML and text templates (`recommendations/email/weekly_picks.html` / `.txt`, through
  `select_template` as compose does) and its subject rendered with one fixed context (the same 8 products, links and
  user for everyone, inside `translation.override(LANGUAGE_CODE)`), FLOOR_PER_BATCH times after each batch of the
  compose and of the send (through the progress callback; its time is left out of theirs). Interleaved, because on
  this shared machine a floor pass before the send and one after differed by half: between the batches both run
  under the same load and in the same process (heap, filled holds). *x floor* is a path's time per shopper over the
  floor's time per render during it. A pass of FLOOR_SAMPLE renders alone before and after is printed too.

Per-stage seconds come from a second compose and send over the first STAGE_SHOPPERS shoppers, through timers wrapped
around the functions send_due_messages calls (exclusive: a stage's time leaves out the stages it calls; a timer costs
microseconds a call, so the timed passes above run without them); *rest* is what no timer covers. `--profile` also
runs cProfile over a compose and a send of those shoppers and prints the heaviest functions. `--quick` is 2,000
shoppers. Every run starts by deleting the Message rows and the e-mail impressions of the last one.
Results are kept in docs/benchmarks.md ("Push").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
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
    peak_mb,
    print_table,
    setup_django,
    transaction,
    vacuum_analyze,
    zipf_popularity,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/rec_bench_push"
DEFAULT_CACHE_URL = "redis://127.0.0.1:6379/7"
FLOW_SLUG = "bench-weekly"
FLOW_SIZE = 8
SITE_URL = "https://shop.example"
HISTORY_DAYS = 90
FOR_YOU_N = 50
SIMILAR_N = 20
TRENDING_N = 50
EVENT_MIX = (("view", 0.8), ("add_to_cart", 0.12), ("purchase", 0.08))
STAGE_SHOPPERS = 2000  # the stage timers' and the profile's passes: the first shoppers
FLOOR_SAMPLE = 5000  # renders per floor pass: its time per message is steady long before 100,000
FLOOR_PER_BATCH = 50  # floor renders between two batches of the send (EMAIL_BATCH_SIZE shoppers, 200 by default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shoppers", type=int, default=100_000, help="consented shoppers the flow e-mails")
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--categories", type=int, default=100)
    parser.add_argument("--events-per-shopper", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data")
    parser.add_argument("--regenerate", action="store_true", help="generate the data even if the marker matches")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop the send after this long")
    parser.add_argument("--quick", action="store_true", help="2,000 shoppers: a check that it works, not a figure")
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"also cProfile a dry run and a send of the first {STAGE_SHOPPERS:,} shoppers",
    )
    parser.add_argument("--force", action="store_true", help="use a cache database that holds other keys")
    add_database_arguments(parser, DEFAULT_DATABASE_URL)
    parser.add_argument("--cache-url", default=os.environ.get("CACHE_URL", DEFAULT_CACHE_URL))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the measuring process
    args = parser.parse_args(argv)
    if args.quick:  # a small data set of its own, so a quick run does not replace the full one
        args.shoppers = min(args.shoppers, 2000)
        if args.database_url == DEFAULT_DATABASE_URL:
            args.database_url += "_quick"
    if args.shoppers < 10:
        parser.error("--shoppers must be at least 10")
    return args


# --- synthetic shop -----------------------------------------------------------------------------------------------


def marker_for(args: argparse.Namespace) -> str:
    keys = ("shoppers", "products", "categories", "events_per_shopper", "seed")
    return args_marker(args, keys, mix=EVENT_MIX, v=1)


def data_in_place(url: str, marker: str) -> datetime | None:
    """The load time when the marker names this data and the tables still hold exactly what was generated."""
    return loaded_at(
        url,
        marker,
        "bench_push_dataset",
        "marker text NOT NULL, loaded_at timestamptz, users bigint, consents bigint, lists bigint, products int",
        [
            "SELECT count(*) FROM auth_user",
            "SELECT count(*) FROM recommendations_emailconsent WHERE opted_in",
            "SELECT count(*) FROM recommendations_storedlist",
            "SELECT count(*) FROM shop_product",
        ],
    )


def _items_json(items: list[list[Any]]) -> str:
    return json.dumps(items, separators=(",", ":"))


def load_data(url: str, args: argparse.Namespace, marker: str) -> datetime:
    """Products, users, consents, events and the active set's lists, COPied in one transaction (~1 min)."""
    started = time.perf_counter()
    loaded_at = datetime.now(UTC).replace(microsecond=0)
    rng = np.random.default_rng(args.seed)
    p, c, s = args.products, args.categories, args.shoppers
    category = rng.integers(c, size=p)
    brand = (category * 3 + rng.integers(0, 5, size=p)) % (3 * c)
    popularity = zipf_popularity(rng, p)
    by_category, cdf = category_cdf(category, popularity, c)
    global_cdf = np.cumsum(popularity) / popularity.sum()
    price_cents = rng.integers(200, 30_000, size=p)
    stock = np.where(rng.random(p) < 0.05, 0, rng.integers(1, 100, size=p))
    active = rng.random(p) >= 0.02
    tastes = rng.integers(c, size=(s, 2))

    def draw_in(categories: np.ndarray) -> np.ndarray:
        at = np.searchsorted(cdf, categories + rng.random(categories.shape), side="right")
        return by_category[np.minimum(at, by_category.size - 1)]

    def draw_any(shape: tuple[int, ...]) -> np.ndarray:
        return np.minimum(np.searchsorted(global_cdf, rng.random(shape), side="right"), p - 1)

    now = loaded_at.isoformat()
    with transaction(url) as cursor:
        cursor.execute("DELETE FROM bench_push_dataset")
        cursor.execute(
            "TRUNCATE recommendations_event, recommendations_productprofile, recommendations_storedlist, "
            "recommendations_precomputerun, recommendations_recommendationset, recommendations_message, "
            "recommendations_flow, recommendations_emailconsent, shop_orderline, shop_order, shop_favorite, "
            "shop_product, shop_brand, shop_category, auth_user CASCADE"
        )
        cursor.copy_expert(
            "COPY shop_category (id, name, slug) FROM STDIN",
            io.StringIO("".join(f"{k + 1}\tCategory {k}\tcat-{k}\n" for k in range(c))),
        )
        cursor.copy_expert(
            "COPY shop_brand (id, name, slug) FROM STDIN",
            io.StringIO("".join(f"{b + 1}\tBrand {b}\tbrand-{b}\n" for b in range(3 * c))),
        )
        products, profiles = io.StringIO(), io.StringIO()
        for i in range(p):
            pid, cat, brd = i + 1, int(category[i]), int(brand[i])
            price = f"{price_cents[i] / 100:.2f}"
            on = "t" if active[i] else "f"
            created = (loaded_at - timedelta(days=400 - i % 400)).isoformat()
            products.write(
                f"{pid}\tBench product {pid}\tbench-product-{pid}\tA product for the push benchmark.\t{cat + 1}\t"
                f"{brd + 1}\t{price}\t{int(stock[i])}\t{on}\tf\t{created}\n"
            )
            profiles.write(
                f"{pid}\tBench product {pid}\tcat-{cat}\tBrand {brd}\t{price}\t{'t' if stock[i] > 0 else 'f'}\t{on}\t"
                f"A product for the push benchmark.\t{created}\t{int(popularity[i] * 1000)}\t{now}\n"
            )
        products.seek(0)
        cursor.copy_expert(
            "COPY shop_product (id, name, slug, description, category_id, brand_id, price, stock, is_active, "
            "is_consumable, created_at) FROM STDIN",
            products,
        )
        copy_profiles(cursor, profiles)
        users, consents = io.StringIO(), io.StringIO()
        joined = (loaded_at - timedelta(days=HISTORY_DAYS)).isoformat()
        for u in range(1, s + 1):
            users.write(f"{u}\t!\t\\N\tf\tshopper{u}\t\t\tshopper{u}@example.com\tf\tt\t{joined}\n")
            consents.write(f"{u}\tt\t{joined}\t\\N\t\t[]\t{joined}\n")
        users.seek(0)
        consents.seek(0)
        cursor.copy_expert(
            "COPY auth_user (id, password, last_login, is_superuser, username, first_name, last_name, email, "
            "is_staff, is_active, date_joined) FROM STDIN",
            users,
        )
        cursor.copy_expert(
            "COPY recommendations_emailconsent (user_id, opted_in, opted_in_at, opted_out_at, opted_out_via, "
            "unsubscribed_flows, updated_at) FROM STDIN",
            consents,
        )
        for table in ("shop_category", "shop_brand", "shop_product", "auth_user"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        # Events: a geometric number per shopper, mostly in their two categories, none in the last day.
        counts = rng.geometric(1.0 / args.events_per_shopper, size=s)
        shopper = np.repeat(np.arange(s), counts)
        n = int(shopper.size)
        in_taste = rng.random(n) < 0.85
        product = np.empty(n, dtype=np.int64)
        product[in_taste] = draw_in(tastes[shopper[in_taste], rng.integers(0, 2, size=int(in_taste.sum()))])
        product[~in_taste] = draw_any((int((~in_taste).sum()),))
        kind = rng.choice(len(EVENT_MIX), size=n, p=[share for _, share in EVENT_MIX])
        seconds = rng.integers(86_400, HISTORY_DAYS * 86_400, size=n)
        end = loaded_at.timestamp()

        def lines(start: int, stop: int) -> Any:
            for i in range(start, stop):
                number, pid = int(shopper[i]) + 1, int(product[i]) + 1
                name = EVENT_MIX[int(kind[i])][0]
                value = f"{price_cents[pid - 1] / 100:.2f}" if name != "view" else "\\N"
                moment = datetime.fromtimestamp(end - int(seconds[i]), tz=UTC).isoformat()
                ids = (str(number), "", f"u:{number}")
                yield event_line(f"bench-{i:09d}", name, ids, str(pid), 1, value, "", moment)

        copy_events(cursor, n, lines)
        # The active set: trending, similar per product, for_you per shopper (reasons name a viewed product).
        cursor.execute(
            "INSERT INTO recommendations_recommendationset (created_at, activated_at, status, algorithm, stats) "
            "VALUES (%s, %s, 'active', 'bench', '{}') RETURNING id",
            [loaded_at, loaded_at],
        )
        (set_id,) = cursor.fetchone()
        servable = active & (stock > 0)
        heat = popularity * rng.lognormal(0, 0.5, size=p) * servable
        buffer = io.StringIO()
        rows = 0
        top = np.argsort(-heat)[:TRENDING_N]
        buffer.write(f"{set_id}\ttrending\t\t{_items_json([[str(i + 1), float(heat[i]), 'trending'] for i in top])}\n")
        rows += 1
        for k in range(c):
            members = np.flatnonzero(category == k)
            ranked = members[np.argsort(-heat[members])][:TRENDING_N]
            items = [[str(i + 1), float(heat[i]), "trending"] for i in ranked if heat[i] > 0]
            buffer.write(f"{set_id}\ttrending\tcategory:cat-{k}\t{_items_json(items)}\n")
            rows += 1
        draws = draw_in(np.repeat(category[:, None], 40, axis=1))
        for i, row in enumerate(draws.tolist()):
            row = [j for j in dict.fromkeys(row) if j != i][:SIMILAR_N]
            items = [[str(j + 1), round(1.0 / (1 + 0.1 * r), 6), "also"] for r, j in enumerate(row)]
            buffer.write(f"{set_id}\tsimilar\t{i + 1}\t{_items_json(items)}\n")
            rows += 1
        buffer.seek(0)
        cursor.copy_expert(
            "COPY recommendations_storedlist (recommendation_set_id, placement, subject, items) FROM STDIN", buffer
        )
        viewed: dict[tuple[int, int], int] = {}
        for number, pid in zip(shopper.tolist(), product.tolist(), strict=True):
            viewed.setdefault((number, int(category[pid])), pid)
        for start in range(0, s, 10_000):
            stop = min(start + 10_000, s)
            pick = rng.integers(0, 2, size=(stop - start, 100))
            draws = draw_in(np.take_along_axis(tastes[start:stop], pick, axis=1))
            outside = rng.random(draws.shape) > 0.85
            draws[outside] = draw_any((int(outside.sum()),))
            buffer = io.StringIO()
            for number, row in enumerate(draws.tolist(), start=start):
                items = []
                for r, j in enumerate(list(dict.fromkeys(row))[:FOR_YOU_N]):
                    anchor = viewed.get((number, int(category[j])))
                    reason = f"because:{anchor + 1}" if anchor is not None and anchor != j else "for_you"
                    items.append([str(j + 1), round(1.0 / (1 + 0.05 * r), 6), reason])
                buffer.write(f"{set_id}\tfor_you\tu:{number + 1}\t{_items_json(items)}\n")
                rows += 1
            buffer.seek(0)
            cursor.copy_expert(
                "COPY recommendations_storedlist (recommendation_set_id, placement, subject, items) FROM STDIN", buffer
            )
        cursor.execute(
            "INSERT INTO bench_push_dataset (marker, loaded_at, users, consents, lists, products) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [marker, loaded_at, s, s, rows, p],
        )
    vacuum_analyze(url)
    print(
        f"loaded {s:,} shoppers, {n:,} events, {rows:,} lists in {time.perf_counter() - started:.0f} s", file=sys.stderr
    )
    return loaded_at


# --- the child: measuring -----------------------------------------------------------------------------------------


class HandOffBackend:
    """Django's SMTP backend up to the socket (its `_send`): the envelope and the serialised message, then the bytes
    are dropped. Named as EMAIL_BACKEND "__main__.HandOffBackend" in the child process; the interface is
    BaseEmailBackend's (open, close, send_messages), written out so this module imports no Django at load."""

    sent_bytes = 0
    messages = 0

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        self.fail_silently = fail_silently

    def open(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def send_messages(self, email_messages: list[Any]) -> int:
        from django.conf import settings
        from django.core.mail.message import sanitize_address

        sent = 0
        for message in email_messages:
            encoding = message.encoding or settings.DEFAULT_CHARSET
            sanitize_address(message.from_email, encoding)
            [sanitize_address(addr, encoding) for addr in message.recipients()]
            HandOffBackend.sent_bytes += len(message.message().as_bytes(linesep="\r\n"))
            HandOffBackend.messages += 1
            sent += 1
        return sent


class Stages:
    """Exclusive seconds per stage: a wrapped call's time, less the wrapped calls it made."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.stack: list[float] = []  # per open call: the time its wrapped children took

    def wrap(self, owner: Any, attribute: str, stage: str) -> None:
        original = getattr(owner, attribute)
        stages = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            stages.stack.append(0.0)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                children = stages.stack.pop()
                stages.seconds[stage] = stages.seconds.get(stage, 0.0) + elapsed - children
                stages.calls[stage] = stages.calls.get(stage, 0) + 1
                if stages.stack:
                    stages.stack[-1] += elapsed

        setattr(owner, attribute, timed)


class Deadline(BaseException):
    """--max-seconds reached during the send. A BaseException, so send_due_messages' per-flow `except Exception`
    (which logs a broken flow) lets it through; raised between batches, so no e-mail is left mid-send."""


def reset_run() -> None:
    """What an earlier run left: its Message rows and the e-mail impressions; the flow as this script defines it."""
    from django.db import connection

    from recommendations.models import Flow

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM recommendations_message")
        cursor.execute("DELETE FROM recommendations_event WHERE event_type = 'impression'")
        # The rows just deleted stay in the indexes until a vacuum: the caps and taken keys would read 100,000 dead
        # rows a batch, which no shop's table holds (the send prunes nothing in bulk). Autocommit: outside a block.
        cursor.execute("VACUUM ANALYZE recommendations_message")
        cursor.execute("VACUUM ANALYZE recommendations_event")
    Flow.objects.update_or_create(
        slug=FLOW_SLUG,
        defaults={
            "name": "Weekly picks (bench)",
            "trigger": Flow.Trigger.WEEKLY_PICKS,
            "placement": "for_you",
            "size": FLOW_SIZE,
            "min_good_items": 3,
            "cap_days": 6,
            "enabled": True,
        },
    )
    Flow.objects.exclude(slug=FLOW_SLUG).update(enabled=False)


@contextmanager
def only_first_shoppers(n: int) -> Iterator[None]:
    """Only the first `n` shoppers opted in while inside (the stage and profile passes), all of them again after."""
    from django.db import connection

    ids = [str(u) for u in range(1, n + 1)]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE recommendations_emailconsent SET opted_in = (user_id = ANY(%s))", [ids])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE recommendations_emailconsent SET opted_in = true")


def make_floor(flow: Any) -> Callable[[int], float]:
    """A function: seconds to render the flow's templates and subject `n` times with one fixed context."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core import signing
    from django.template import engines
    from django.template.loader import select_template
    from django.utils import translation

    from recommendations import catalog
    from recommendations.models import ProductProfile
    from recommendations.push import compose
    from recommendations.push.triggers import trigger_of

    ids = [str(i) for i in range(1, FLOW_SIZE + 1)]
    products = catalog.get_products(ids)
    profiles = {p.product_id: p for p in ProductProfile.objects.filter(product_id__in=ids)}
    # Fixed links of a real link's length (the links' API is not the floor's business: signed once, reused).
    token = signing.dumps({"u": "1", "f": flow.slug, "r": "0" * 32, "p": ids[0]}, salt="bench", compress=True)
    link = f"{SITE_URL}/e/c/{token}/"
    items = [
        compose.EmailItem(pid, products[pid], profiles[pid].name, profiles[pid].price, "Picked for your taste", link)
        for pid in ids
    ]
    context = {
        "flow": flow,
        "user": get_user_model().objects.get(pk=1),
        "products": items,
        "viewed": [],
        "unsubscribe_url": f"{SITE_URL}/e/u/{token}/",
        "site_url": SITE_URL + "/",
    }
    source = flow.subject or trigger_of(flow).default_subject
    subject = engines["django"].from_string("{% autoescape off %}" + source + "{% endautoescape %}")

    def floor(n: int) -> float:
        started = time.perf_counter()
        with translation.override(settings.LANGUAGE_CODE):
            for _ in range(n):
                context["subject"] = subject.render(context)
                select_template(compose.template_names(flow, "html")).render(context)
                select_template(compose.template_names(flow, "txt")).render(context)
        return time.perf_counter() - started

    return floor


class Interleaved:
    """The floor measured between the send's batches (FLOOR_PER_BATCH renders after each): the machine and the
    process (its heap, the holds the send filled) are then the same for both, where a pass before and one after
    differed by half on this shared machine. The time it takes is left out of the send's."""

    def __init__(self, floor: Callable[[int], float]) -> None:
        self.floor = floor
        self.seconds = 0.0
        self.renders = 0

    def after_batch(self) -> None:
        self.seconds += self.floor(FLOOR_PER_BATCH)
        self.renders += FLOOR_PER_BATCH


def send(
    flow: Any, deadline: float, stages: Stages | None, dry_run: bool = False, floor: Interleaved | None = None
) -> tuple[float, dict[str, Any]]:
    """The flow sent (or dry-run); its seconds, less the interleaved floor's, and send_due_messages' summary."""
    from recommendations.push import sending

    def progress(slug: str, done: int, total: int) -> None:
        if floor is not None:
            floor.after_batch()
        if time.monotonic() > deadline:
            raise Deadline(f"--max-seconds reached after {done:,} of {total:,} shoppers")

    from django.utils import timezone

    # Noon in the site's zone today: outside the default quiet hours (EMAIL_QUIET_HOURS), whenever the bench runs.
    noon = timezone.localtime().replace(hour=12, minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    try:
        summary = sending.send_due_messages(flow=flow.slug, progress=progress, now=noon, dry_run=dry_run)
    except Deadline as stop:
        summary = {"flows": {flow.slug: {"error": str(stop)}}}
    return time.perf_counter() - started - (floor.seconds if floor is not None else 0.0), summary


def install_stage_timers(stages: Stages) -> None:
    from django.template import backends

    from recommendations import serving
    from recommendations.push import compose, consent, sending, tokens
    from recommendations.push.triggers import TRIGGERS

    trigger = TRIGGERS["weekly_picks"]
    walk = trigger.candidates
    trigger.candidates = lambda flow, now: list(walk(flow, now))  # a generator: time the walk, not its creation
    stages.wrap(trigger, "candidates", "audience")
    for name in ("load_users", "consenting", "addresses"):
        stages.wrap(consent, name, "consent and addresses")
    stages.wrap(sending, "capped_users", "caps")
    stages.wrap(compose, "opted_out_users", "compose: tracking refusals")
    stages.wrap(serving, "read_ahead_many", "compose: serving pipeline")
    stages.wrap(serving, "recommend", "compose: serving pipeline")
    stages.wrap(serving, "attach_products_many", "compose: products")
    stages.wrap(compose, "good_items", "compose: other")
    stages.wrap(compose, "compose", "compose: other")
    stages.wrap(tokens.Links, "__init__", "render: signed links")
    stages.wrap(tokens.Links, "click", "render: signed links")
    stages.wrap(tokens.Links, "unsubscribe", "render: signed links")
    stages.wrap(compose, "_subject", "render: subject")
    stages.wrap(backends.django.Template, "render", "render: templates")
    stages.wrap(compose, "render", "render: other")
    stages.wrap(compose, "email_message", "message object")
    stages.wrap(sending, "_claim", "claim (row committed)")
    stages.wrap(HandOffBackend, "send_messages", "hand-off (serialise)")
    stages.wrap(sending, "_store_impressions", "impressions (one insert per batch)")


def child(args: argparse.Namespace) -> int:
    """Runs in its own process: floor, compose, send (each with the floor between its batches), floor, then the
    stage and profile passes; prints one JSON line."""
    os.environ.pop("CELERY_BROKER_URL", None)
    setup_django(
        DATABASE_URL=args.database_url,
        CACHE_URL=args.cache_url,
        DJANGO_DEBUG="0",
        DJANGO_LOG_LEVEL="WARNING",
        RECOMMENDATIONS_SITE_URL=SITE_URL,
    )
    import cProfile
    import pstats

    from django.conf import settings
    from django.core.cache import cache
    from django.db import connection
    from django.db.models import Count

    from recommendations.models import Flow, Message

    settings.EMAIL_BACKEND = "__main__.HandOffBackend"
    cache.clear()
    reset_run()
    flow = Flow.objects.get(slug=FLOW_SLUG)
    floor = make_floor(flow)
    floor(200)  # warm: templates compiled and cached, translations loaded
    rss_before = peak_mb()
    sample = min(args.shoppers, FLOOR_SAMPLE)
    floor_first = floor(sample)
    # Composing: the dry run does all a send does up to the claim (audience, consent, caps, serving, links,
    # templates, the message object) and writes nothing; the target is its time against the floor,
    # measured between its batches.
    compose_floor, send_floor = Interleaved(floor), Interleaved(floor)
    compose_seconds, compose_summary = send(
        flow, time.monotonic() + args.max_seconds, None, dry_run=True, floor=compose_floor
    )
    rss_compose = peak_mb()
    seconds, summary = send(flow, time.monotonic() + args.max_seconds, None, floor=send_floor)
    rss_send = peak_mb()
    statuses = dict(Message.objects.order_by().values_list("status").annotate(n=Count("pk")))
    sent = statuses.get(Message.Status.SENT, 0)
    handled = sum(statuses.values())
    floor_second = floor(sample)
    handed_off, handed_off_bytes = HandOffBackend.messages, HandOffBackend.sent_bytes  # the timed send's only
    # Where the time goes: both again over the first STAGE_SHOPPERS shoppers, through timers around the functions
    # send_due_messages calls (apart from the timed passes above: a timer costs a few microseconds a call).
    stages = Stages()
    install_stage_timers(stages)
    with only_first_shoppers(min(args.shoppers, STAGE_SHOPPERS)):
        reset_run()
        compose_total, _ = send(flow, time.monotonic() + args.max_seconds, stages, dry_run=True)
        compose_stages = dict(stages.seconds)
        stages.seconds.clear()
        stages.calls.clear()
        send_total, _ = send(flow, time.monotonic() + args.max_seconds, stages)
        stage_seconds, stage_calls = dict(stages.seconds), dict(stages.calls)
    stage_statuses = dict(Message.objects.order_by().values_list("status").annotate(n=Count("pk")))
    result: dict[str, Any] = {
        "seconds": seconds,
        "summary": summary,
        "compose_seconds": compose_seconds,
        "compose_handled": compose_summary["flows"].get(FLOW_SLUG, {}).get("due", 0),
        "compose_summary": compose_summary,
        "compose_stages": compose_stages,
        "stage_shoppers": min(args.shoppers, STAGE_SHOPPERS),
        "stage_handled": sum(stage_statuses.values()),
        "stage_totals": [compose_total, send_total],
        "compose_peak_mb": rss_compose,
        "statuses": statuses,
        "sent": sent,
        "handled": handled,
        "floors": [floor_first / sample, floor_second / sample],
        "interleaved": [
            compose_floor.seconds / max(compose_floor.renders, 1),
            send_floor.seconds / max(send_floor.renders, 1),
        ],
        "interleaved_renders": [compose_floor.renders, send_floor.renders],
        "floor_sample": sample,
        "stages": stage_seconds,
        "calls": stage_calls,
        "bytes": handed_off_bytes,
        "handed_off": handed_off,
        "rss_before_send": rss_before,
        "peak_mb": rss_send,
        "profile": "",
    }
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        result["postgres"] = cursor.fetchone()[0]
    if args.profile:
        reset_run()
        cache.clear()
        out = io.StringIO()
        with only_first_shoppers(min(args.shoppers, STAGE_SHOPPERS)):
            for name, dry_run in (("compose (dry run)", True), ("send", False)):
                profiler = cProfile.Profile()
                profiler.enable()
                send(flow, time.monotonic() + args.max_seconds, None, dry_run=dry_run)
                profiler.disable()
                out.write(f"\n--- profile: {name} of the first {STAGE_SHOPPERS:,} shoppers ---\n")
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
                pstats.Stats(profiler, stream=out).sort_stats("cumtime").print_stats(r"recommendations/", 40)
        result["profile"] = out.getvalue()
    cache.clear()
    print(json.dumps(result, default=str))
    return 0


# --- the parent: data and the report -----------------------------------------------------------------------------


def check_cache_empty(url: str, force: bool) -> None:
    import redis

    client = redis.Redis.from_url(url)
    foreign = [k for k in client.scan_iter(count=1000) if b":recommendations:" not in k]
    if foreign and not force:
        raise SystemExit(f"refusing to empty {url}: it holds {len(foreign)}+ keys that are not this script's")


def report(result: dict[str, Any], args: argparse.Namespace, started: datetime, load: tuple[float, float]) -> None:
    seconds, handled, sent = result["seconds"], result["handled"], result["sent"]
    compose_floor, send_floor = result["interleaved"]
    flow = result["summary"]["flows"].get(FLOW_SLUG, {})
    print(f"push benchmark, {started:%Y-%m-%d %H:%M} UTC")
    print(f"  {hardware()}; 1-minute load average {load[0]:.2f} at the start, {load[1]:.2f} at the end")
    print(f"  Python {platform.python_version()}, PostgreSQL {result['postgres']}, cache {args.cache_url}")
    print(
        f"  {args.shoppers:,} consented shoppers, {args.products:,} products; flow {FLOW_SLUG} (weekly_picks, for_you, "
        f"{FLOW_SIZE} products, at least 3 of their own); EMAIL_BACKEND: a hand-off backend (the SMTP backend's "
        f"envelope and serialisation, no socket)"
    )
    if "error" in flow:
        print(f"  the send stopped: {flow['error']}")
    composed = result["compose_handled"]
    compose_seconds = result["compose_seconds"]
    would = result["compose_summary"]["flows"].get(FLOW_SLUG, {}).get("sent", 0)

    def row(path: str, shoppers: int, sent_: str, spent: float, floor_each: float, peak: float) -> list[str]:
        return [
            path,
            f"{shoppers:,}",
            sent_,
            f"{spent:.1f}",
            f"{shoppers / spent:,.0f}",
            f"{spent / shoppers * 1000:.2f}",
            f"{spent / (floor_each * shoppers):.2f}",
            f"{peak:.0f}",
        ]

    rows = [
        row(
            "compose (send_due_messages, dry run)",
            composed,
            f"({would:,})",
            compose_seconds,
            compose_floor,
            result["compose_peak_mb"],
        ),
        row(
            "floor, between the compose's batches",
            composed,
            "-",
            compose_floor * composed,
            compose_floor,
            result["rss_before_send"],
        ),
        row("send (send_due_messages)", handled, f"{sent:,}", seconds, send_floor, result["peak_mb"]),
        row(
            "floor, between the send's batches",
            handled,
            "-",
            send_floor * handled,
            send_floor,
            result["rss_before_send"],
        ),
    ]
    header = ["path", "shoppers", "sent", "seconds", "messages/s", "ms each", "x floor", "peak MB"]
    print_table(header, rows, label_column=True)
    renders = result["interleaved_renders"]
    print(
        f"(floor: the templates rendered with fixed products, {FLOOR_PER_BATCH} times after each batch: "
        f"{renders[0]:,} and {renders[1]:,} renders, left out of the compose's and the send's seconds; its seconds "
        f"are for as many shoppers as the path handled. In passes of {result['floor_sample']:,} renders alone: "
        f"{result['floors'][0] * 1000:.2f} ms before the compose, {result['floors'][1] * 1000:.2f} ms after the "
        f"send. Statuses {result['statuses']}; {result['handed_off']:,} messages handed off, "
        f"{result['bytes'] / max(result['handed_off'], 1) / 1024:.1f} KiB each; peak MB of the floor rows: before "
        "the compose)"
    )
    count = result["stage_handled"]
    for title, stage_seconds, total, rest in (
        ("compose (dry run)", result["compose_stages"], result["stage_totals"][0], "rest (batching, report)"),
        ("send", result["stages"], result["stage_totals"][1], "rest (rows marked sent, batching)"),
    ):
        stages = dict(sorted(stage_seconds.items(), key=lambda kv: -kv[1]))
        covered = sum(stages.values())
        stage_rows = [
            [name, f"{value:.1f}", f"{value / total * 100:.0f} %", f"{value / count * 1000:.3f}"]
            for name, value in stages.items()
        ]
        stage_rows.append(
            [
                rest,
                f"{total - covered:.1f}",
                f"{(total - covered) / total * 100:.0f} %",
                f"{(total - covered) / count * 1000:.3f}",
            ]
        )
        print(f"where the time goes: {title} of the first {result['stage_shoppers']:,} shoppers, with stage timers")
        print_table(["stage", "seconds", "share", "ms a shopper"], stage_rows, label_column=True)
    if result["profile"]:
        print(result["profile"])
    command = " ".join(["bench/push.py", *sys.argv[1:]])
    print(f"command: .venv/bin/python {command}")


def main() -> int:
    args = parse_args()
    if args.child:
        return child(args)
    started, load = datetime.now(UTC), os.getloadavg()[0]
    if not is_bench_database(args.database_url):
        name = database_name(args.database_url)
        raise SystemExit(f"refusing to use {name!r}: name a *bench* database (this script replaces its data)")
    check_cache_empty(args.cache_url, args.force)
    create_database(args.database_url)
    env = {**os.environ, "DATABASE_URL": args.database_url, "DJANGO_SETTINGS_MODULE": "shop.settings"}
    env.pop("CELERY_BROKER_URL", None)
    env.pop("CACHE_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    marker = marker_for(args)
    loaded_at = None if args.regenerate else data_in_place(args.database_url, marker)
    if loaded_at is None:
        load_data(args.database_url, args, marker)
    else:
        print(f"the data loaded {loaded_at:%Y-%m-%d %H:%M} UTC is in place; not regenerating", file=sys.stderr)
    print(f"measuring {args.shoppers:,} shoppers ...", file=sys.stderr)
    done = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--child"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=args.max_seconds * 3 + 600,
    )
    if done.returncode != 0:
        raise SystemExit(f"the measuring process failed (exit {done.returncode}); its output is above")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["handled"]:
        flow = result["summary"]["flows"].get(FLOW_SLUG, {})
        raise SystemExit(f"the send handled no shopper: {flow.get('error') or result['summary']}")
    report(result, args, started, (load, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
