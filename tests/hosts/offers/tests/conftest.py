"""The offers host's shop, set up once per session the way a new user would: products, sync, import, train, precompute.

Each step runs its management command in this process against pytest-django's test database (committed, so the
later steps and every test see it), and its output is kept for the tests that assert what it said.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from catalog.models import Category, Offer, Product
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

HOST_DIR = Path(__file__).resolve().parent.parent
FROM_WHEEL = os.environ.get("HOST_FROM_WHEEL") == "1"
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None

PRODUCTS = 120
SHOPPERS = 60
CATEGORY_SLUGS = ("tea", "coffee", "cocoa", "juice", "water", "snacks")


@dataclass
class Shop:
    """What the session's setup made and what each command printed."""

    products: list[Product]
    sampler: Product  # in tea and coffee, offers at 13.00 (none left) and 9.00 (four left)
    sold_out: Product  # every offer at zero stock; coffee's first product, bought with coffee's second
    shopper_ids: list[str]
    most_viewed: Product
    bought_together: tuple[Product, set[Product]]  # tea's second product and the two bought with it
    outputs: dict[str, str] = field(default_factory=dict)


def _run(name: str, *args: str) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _catalog(rng: random.Random) -> tuple[list[Product], Product, Product]:
    drinks = Category.objects.create(slug="drinks", name="Drinks", depth=0)
    categories = [
        Category.objects.create(slug=slug, name=slug.title(), parent=drinks, depth=1) for slug in CATEGORY_SLUGS
    ]
    sampler = Product.objects.create(name="Tea and coffee sampler", description="Two of everything, tea and coffee")
    sampler.categories.set([categories[0], categories[1]])
    Offer.objects.bulk_create(
        [
            Offer(product=sampler, seller="Leaf & Bean", price=Decimal("13.00"), stock=0),
            Offer(product=sampler, seller="Corner shop", price=Decimal("9.00"), stock=4),
        ]
    )
    products = [sampler]
    for i in range(1, PRODUCTS):
        category = categories[i % len(categories)]
        product = Product.objects.create(name=f"{category.name} no. {i:03d}", description=f"A {category.slug} product")
        product.categories.add(category)
        products.append(product)
        sold_out = i == 1
        Offer.objects.bulk_create(
            [
                Offer(
                    product=product,
                    seller=f"seller {n}",
                    price=Decimal(rng.randint(300, 3000)) / 100,
                    # Only `sold_out` is out of stock: its first offer's seller has none left, like every other.
                    stock=0 if sold_out else rng.randint(1 if n == 0 else 0, 20),
                )
                for n in range(rng.randint(1, 3))
            ]
        )
    return products, sampler, products[1]


def _events_csv(path: Path, products: list[Product], shopper_ids: list[str], rng: random.Random) -> Counter:
    """Shoppers with a taste for one category, back three times over twenty days: views, carts and a basket.

    The first four products of each category (in creation order) are bought together in pairs.
    """
    by_category: dict[str, list[Product]] = {}
    for product in products[1:]:
        by_category.setdefault(product.description.split()[1], []).append(product)
    views: Counter = Counter()
    now = timezone.now()
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "product_id", "event_type", "timestamp", "quantity"])
        for n, user_id in enumerate(shopper_ids):
            taste = by_category[CATEGORY_SLUGS[n % len(CATEGORY_SLUGS)]][:12]
            for days_ago in (18, 10, 3):
                moment = now - timedelta(days=days_ago + rng.uniform(0, 2))
                # Each basket is one of three overlapping pairs (0 and 1, 1 and 2, 2 and 3 of the category), so the
                # second product is bought with two others: enough for a bought_together block.
                pair = rng.randrange(3)
                seen = [taste[pair], taste[pair + 1], *rng.sample(taste[6:], 2)]
                if n % len(CATEGORY_SLUGS) < 2 and days_ago == 10:  # tea and coffee drinkers look at the sampler
                    seen.append(products[0])
                for event_type, picked in (("view", seen), ("add_to_cart", seen[:3]), ("purchase", seen[:2])):
                    for product in picked:
                        moment += timedelta(seconds=70)
                        views[product.pk] += event_type == "view"
                        writer.writerow([user_id, product.pk, event_type, moment.isoformat(), 1])
    return views


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    """Trained models go to a temporary MODEL_DIR, not into the host's directory."""
    from django.conf import settings

    directory = tmp_path_factory.mktemp("models")
    with override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, "MODEL_DIR": str(directory)}):
        yield directory


@pytest.fixture(scope="session")
def shop(django_db_setup, django_db_blocker, model_dir, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    rng = random.Random(12)
    with django_db_blocker.unblock():
        cache.clear()  # the host's Redis cache database may hold a previous run's keys
        products, sampler, sold_out = _catalog(rng)
        users = [get_user_model().objects.create_user(f"shopper{n:02d}") for n in range(SHOPPERS)]
        shopper_ids = [str(user.pk) for user in users]
        outputs = {"sync": _run("sync_products", "--no-progress")}
        events = tmp_path_factory.mktemp("import") / "events.csv"
        views = _events_csv(events, products, shopper_ids, rng)
        outputs["import"] = _run("import_events", str(events), "--no-progress")
        outputs["train"] = _run("train_recommender", "--no-progress")
        outputs["precompute"] = _run("precompute_recommendations", "--no-progress")
    most_viewed = next(p for p in products if p.pk == views.most_common(1)[0][0])
    tea = [p for p in products[1:] if p.description == "A tea product"]
    return Shop(products, sampler, sold_out, shopper_ids, most_viewed, (tea[1], {tea[0], tea[2]}), outputs)
