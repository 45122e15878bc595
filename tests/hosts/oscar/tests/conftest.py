"""The Oscar host's suite: one shop built once, then the app's whole path through it, step by step.

The session's database is migrated by pytest-django, then `build_oscar_shop` writes 300 products; the `pipeline`
fixture runs our commands in order (sync, import events, train, precompute) once and keeps what each printed, so each
test asserts one step. The browser test runs last (pytest-django orders live-server tests after the others) and is
the only one that changes the shop for good.
"""

from __future__ import annotations

import csv
import io
import random
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone

SHOPPERS = 240


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=out)
    return out.getvalue()


def clear_cache() -> None:
    """Forget an earlier run's blocks and counters: only this host's keys when the cache is a Redis database that
    may be shared (settings give it a KEY_PREFIX), everything otherwise."""
    client = getattr(cache, "_cache", None)
    if cache.key_prefix and hasattr(client, "get_client"):
        redis = client.get_client(write=True)
        for key in redis.scan_iter(match=f"{cache.key_prefix}:*", count=1000):
            redis.delete(key)
    else:
        cache.clear()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    with django_db_blocker.unblock():
        clear_cache()
        run("build_oscar_shop", "--products", "300")
    yield


def write_events(path: Path) -> int:
    """A month of shoppers who each keep to one category: views, some basket additions and purchases."""
    from oscar.core.loading import get_model

    from recommendations.contrib.oscar.receivers import profile_id

    product_model = get_model("catalogue", "Product")
    by_category: dict[str, list[str]] = {}
    for product in product_model.objects.exclude(structure="child").prefetch_related("categories"):
        for category in product.categories.all():
            by_category.setdefault(category.slug, []).append(profile_id(product))
    rng = random.Random(7)
    now = timezone.now() - timedelta(hours=1)
    rows = 0
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["event_type", "timestamp", "user_id", "product_id", "quantity"])
        for shopper in range(SHOPPERS):
            products = by_category[sorted(by_category)[shopper % len(by_category)]]
            start = now - timedelta(days=rng.uniform(1, 30))
            for step, product_id in enumerate(rng.sample(products, min(len(products), rng.randint(4, 12)))):
                when = start + timedelta(minutes=3 * step)
                writer.writerow(["view", when.isoformat(), f"shopper-{shopper}", product_id, 1])
                rows += 1
                if rng.random() < 0.3:
                    writer.writerow(
                        ["add_to_cart", (when + timedelta(seconds=40)).isoformat(), f"shopper-{shopper}", product_id, 1]
                    )
                    writer.writerow(
                        ["purchase", (when + timedelta(minutes=1)).isoformat(), f"shopper-{shopper}", product_id, 1]
                    )
                    rows += 2
    return rows


@pytest.fixture(scope="session")
def pipeline(django_db_setup: Any, django_db_blocker: Any) -> dict[str, Any]:
    """Sync, import, train and precompute once; what each command printed, by step."""
    with django_db_blocker.unblock():
        steps: dict[str, Any] = {"sync": run("sync_products", "--no-progress")}
        events = Path(tempfile.mkdtemp(prefix="oscar-host-events-")) / "events.csv"
        steps["event_rows"] = write_events(events)
        steps["import"] = run("import_events", str(events), "--no-progress")
        steps["train"] = run("train_recommender", "--no-progress")
        steps["precompute"] = run("precompute_recommendations", "--no-progress")
    return steps


@pytest.fixture
def client(client: Any) -> Any:
    """A shopper who answered the consent banner (templates/oscar/layout.html) with yes; test_pipeline.py's consent
    test uses a client that has not."""
    client.cookies["rec_consent"] = "granted"
    return client
