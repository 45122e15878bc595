"""Data sets for the quality benchmark (bench/quality.py): the shop's own generated data, and MovieLens-100k.

Both go through the engine's own data path (`recommendations.engine.dataset`: event rows -> EventLog -> cleaned
-> Interactions, product rows -> ItemFeatures), so the bench measures what a retrain would see.

- Generated: `shop.demo_data.DemoShopGenerator` (what `manage.py generate_demo_data` runs) with its database
  writes replaced by lists in memory. The replacements make the same random draws as the writers they replace, so
  a seed and size give the same events the command would write into PostgreSQL (product ids are the primary keys a
  fresh database hands out, shoppers `u:<user pk>` / `v:<visitor id>` as the tracker writes them), without the
  minutes of INSERTs. If the writers in shop/demo_data.py start drawing differently, the shop stays statistically
  the same but stops matching the command event for event.
- Public: MovieLens-100k (943 users, 1,682 movies, 100,000 ratings with timestamps, 1997-09 to 1998-04) as shipped
  inside the PyPI wheel recbole==1.2.1 (recbole/dataset_example/ml-100k). Fetched on first use with
  `pip download --no-deps` into bench/.cache, checked against a pinned sha256, read straight from the wheel.
  Licence: RecBole's code is MIT; the data keeps the GroupLens licence (research use, acknowledge the data set,
  no redistribution, no commercial use without permission): the bench never copies it out of bench/.cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import common
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
HISTORY_END = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so a seed always generates the same shop

# name -> generate_demo_data arguments
GENERATED_SIZES: dict[str, dict[str, int]] = {
    "small": {"users": 2000, "products": 500, "days": 60},
    "medium": {"users": 20000, "products": 5000, "days": 60},
}

ML100K_PACKAGE = "recbole"
ML100K_VERSION = "1.2.1"
ML100K_WHEEL = "recbole-1.2.1-py3-none-any.whl"
ML100K_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
ML100K_MEMBERS = ("recbole/dataset_example/ml-100k/ml-100k.inter", "recbole/dataset_example/ml-100k/ml-100k.item")

ProfileRow = tuple[str, str, str, str, object, str, datetime | None]  # as recommendations.training.loading reads them
EventRow = tuple[str, str, str, datetime]


@dataclass
class BenchData:
    """One data set, ready to split: the engine's Interactions plus the product rows its features come from."""

    name: str
    source: str  # one line saying where the data came from, for the report
    interactions: Any  # recommendations.engine.base.Interactions
    profile_rows: list[ProfileRow]
    reference: datetime | None  # the newest event: "now" for the item ages
    stats: dict[str, Any] = field(default_factory=dict)

    def features(self, popularity_from: Any = None) -> Any:
        """ItemFeatures of the catalog; popularity from `popularity_from` (the training part of a split)."""
        from recommendations.engine.dataset import item_features

        return item_features(self.profile_rows, popularity_from, reference=self.reference)


def split(data: BenchData, mode: str, seed: int = 0) -> tuple[Any, Any]:
    """`engine.split.decide_split` of `data` in `mode` with the engine's settings, as a retrain splits: (split,
    decision)."""
    from recommendations.conf import rec_settings
    from recommendations.engine.split import decide_split

    return decide_split(
        data.interactions,
        mode,
        valid_fraction=float(rec_settings.VALIDATION_FRACTION),
        test_fraction=float(rec_settings.TEST_FRACTION),
        max_eval_shoppers=int(rec_settings.MAX_EVAL_SHOPPERS),
        seed=seed,
    )


def setup_django() -> None:
    """rec_settings, training.runs and shop.demo_data need Django set up (the engine's own data path does not)."""
    common.setup_django()


def _event_weights() -> dict[str, float]:
    from recommendations.conf import rec_settings

    return {k: float(v) for k, v in rec_settings.EVENT_WEIGHTS.items()}


def _to_bench_data(
    name: str, source: str, rows: list[EventRow], profiles: list[ProfileRow], clean: bool, started: float
) -> BenchData:
    """Event rows and product rows through the engine's loader: EventLog, cleaning, Interactions."""
    from recommendations.conf import rec_settings
    from recommendations.engine import dataset

    item_ids = [p[0] for p in profiles]
    log = dataset.event_log_from_rows(rows, item_ids, _event_weights())
    cleaning: dict[str, int] = {}
    if clean:
        burst, bot_rate = float(rec_settings.BURST_SECONDS), int(rec_settings.BOT_MAX_EVENTS_PER_MINUTE)
        log, stats = dataset.clean_log(log, burst, bot_rate)
        cleaning = stats.as_dict()
    interactions, _shoppers = dataset.to_interactions(log)
    newest = log.newest_us
    reference = None if newest is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=newest)
    stats = {
        "rows": len(rows),
        "events": interactions.n_events,
        "shoppers": interactions.n_shoppers,
        "items": len(item_ids),
        "items_with_events": int(np.unique(interactions.item).size),
        "days": round(float(interactions.age_days.max()), 1) if interactions.n_events else 0.0,
        "cleaning": cleaning,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return BenchData(name, source, interactions, profiles, reference, stats)


# ---- generated: the shop's own demo generator, in memory ----------------------------------------------------------


def _memory_generator_class() -> type:
    """DemoShopGenerator with its writers replaced by in-memory ones making the same random draws (see module doc)."""
    from recommendations.tracking import shopper_key
    from shop.demo_data import CITIES, FIRST_NAMES, LAST_NAMES, OUT_OF_STOCK_SHARE, STREETS, DemoShopGenerator

    class MemoryShop(DemoShopGenerator):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.profiles: list[ProfileRow] = []
            self.rows: list[EventRow] = []
            self.next_user_pk = 1

        def write_catalog(self, cat: Any) -> None:
            # Same draws, same order as DemoShopGenerator.write_catalog: stock check, description, stock level.
            for i in range(self.n_products):
                in_stock = self.rng.random() >= OUT_OF_STOCK_SHARE
                description = self.describe(cat, i)
                if in_stock:
                    self.rng.integers(3, 250)
                pk = i + 1  # what a fresh database's sequence hands out
                cat.pks.append(pk)
                spec = cat.specs[cat.category[i]]
                self.profiles.append(
                    (
                        str(pk),
                        cat.names[i],
                        spec.slug,
                        cat.brand_names[cat.brand[i]],
                        cat.prices[i],
                        description,
                        self.at(float(cat.created[i])),
                    )
                )

        def write_users(
            self, first_user: int, count: int, first_seen: list[float], last_seen: list[float]
        ) -> list[int]:
            for _u in range(count):  # joined, first name, last name
                self.rng.exponential(60 * 86_400.0)
                self.rng.integers(len(FIRST_NAMES))
                self.rng.integers(len(LAST_NAMES))
            pks = list(range(self.next_user_pk, self.next_user_pk + count))
            self.next_user_pk += count
            return pks

        def write_chunk(
            self,
            cat: Any,
            first_user: int,
            shoppers: list[Any],
            user_pks: list[int],
            events: list[Any],
            orders: list[Any],
            favorites: set[tuple[int, int]],
        ) -> None:
            for _order in orders:  # full name (2 draws), address (3 draws)
                self.rng.integers(len(FIRST_NAMES))
                self.rng.integers(len(LAST_NAMES))
                self.rng.integers(1, 200)
                self.rng.integers(len(STREETS))
                self.rng.integers(len(CITIES))
            keys = [
                shopper_key(str(user_pks[s.user_index]) if s.user_index is not None else "", s.visitor_id)
                for s in shoppers
            ]
            for event_type, ref, p, _quantity, _value, _query, t, _order_index, _context in events:
                if p < 0:
                    continue  # searches name no product
                self.rows.append((keys[ref], str(cat.pks[p]), event_type, self.at(min(t, self.period))))
                self.stats.by_type[event_type] = self.stats.by_type.get(event_type, 0) + 1
            self.stats.events += len(events)
            self.stats.orders += len(orders)
            self.stats.favorites += len(favorites)

        def write_sales_counts(self, cat: Any) -> None:
            return None

        def run(self) -> Any:
            import shop.demo_data as demo

            # simulate_chunk wraps its writes in transaction.atomic(); nothing here touches a database.
            saved, demo.transaction = demo.transaction, SimpleNamespace(atomic=contextlib.nullcontext)
            try:
                cat = self.make_catalog()
                self.write_catalog(cat)
                for first in range(0, self.n_users, demo.USER_CHUNK):
                    self.simulate_chunk(cat, first, min(demo.USER_CHUNK, self.n_users - first))
            finally:
                demo.transaction = saved
            return self.stats

    return MemoryShop


def generated(name: str, seed: int = 0) -> BenchData:
    """A generated shop of size `name` (GENERATED_SIZES), as generate_demo_data would write it with --now 2026-01-01."""
    size = GENERATED_SIZES[name]
    started = time.perf_counter()
    shop = _memory_generator_class()(
        users=size["users"], products=size["products"], days=size["days"], seed=seed, now=HISTORY_END
    )
    stats = shop.run()
    profiles = sorted(shop.profiles, key=lambda r: r[0])  # load_profile_rows orders by product_id (a string)
    source = (
        f"`generate_demo_data --users {size['users']} --products {size['products']} --days {size['days']} "
        f"--seed {seed} --now 2026-01-01T00:00:00Z` (generator run in memory), {stats.users:,} users + "
        f"{stats.visitors:,} anonymous visitors, {stats.orders:,} orders"
    )
    return _to_bench_data(name, source, shop.rows, profiles, clean=True, started=started)


# ---- public: MovieLens-100k from the recbole wheel ------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_ml100k_wheel() -> Path:
    """The pinned recbole wheel in bench/.cache, downloaded with pip on first use and always hash-checked."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = CACHE / ML100K_WHEEL
    if not wheel.exists():
        print(f"fetching {ML100K_PACKAGE}=={ML100K_VERSION} from PyPI into {CACHE} (2.1 MB, once)", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
                f"{ML100K_PACKAGE}=={ML100K_VERSION}",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
    actual = _sha256(wheel)
    if actual != ML100K_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{wheel.name}: sha256 {actual} is not the pinned {ML100K_SHA256}; deleted it")
    return wheel


def _lines(archive: zipfile.ZipFile, member: str) -> Iterator[list[str]]:
    with archive.open(member) as handle:
        lines = iter(handle.read().decode("utf-8").splitlines())
        next(lines)  # the atomic-file header, e.g. "user_id:token<TAB>item_id:token..."
        for line in lines:
            if line:
                yield line.split("\t")


def movielens_100k() -> BenchData:
    """MovieLens-100k as shop events: 4-5 stars a favourite, 1-3 stars a view; genres as category and text.

    Not cleaned: the engine's bot rule (over 60 events in a minute) would drop the many real users who rated a
    batch of films in one sitting; one rating per user and film leaves no bursts to collapse either.
    """
    started = time.perf_counter()
    wheel = fetch_ml100k_wheel()
    with zipfile.ZipFile(wheel) as archive:
        ratings = list(_lines(archive, ML100K_MEMBERS[0]))
        movies = list(_lines(archive, ML100K_MEMBERS[1]))
    profiles: list[ProfileRow] = []
    for item_id, title, year, genres in movies:
        released = datetime(int(year), 1, 1, tzinfo=UTC) if year.isdigit() else None
        genre_list = genres.split()
        category = genre_list[0] if genre_list else ""
        profiles.append((item_id, title, category, "", None, f"{title} {genres}", released))
    profiles.sort(key=lambda r: r[0])
    rows: list[EventRow] = [
        (f"u:{user}", item, "favorite" if float(rating) >= 4 else "view", datetime.fromtimestamp(int(float(ts)), UTC))
        for user, item, rating, ts in ratings
    ]
    source = (
        f"MovieLens-100k (GroupLens) from the PyPI wheel {ML100K_WHEEL} (sha256 {ML100K_SHA256[:12]}…); "
        "ratings 4-5 = favorite, 1-3 = view; not cleaned"
    )
    return _to_bench_data("public", source, rows, profiles, clean=False, started=started)


def load(name: str, seed: int = 0) -> BenchData:
    if name in GENERATED_SIZES:
        return generated(name, seed)
    if name == "public":
        return movielens_100k()
    raise ValueError(f"unknown data set {name!r}: one of {', '.join([*GENERATED_SIZES, 'public'])}")
