"""A small shop with real history for browser tests, and a wait for the events a page sends in the background.

`build_shop` writes what a live server needs to render every block: categories, brands and products with their
engine profiles, shoppers who browsed within categories (so similar products and trending exist), one registered
shopper with a history of their own (so a logged-in "Recommended for you" has a stored list), and a precompute.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone
from playwright.sync_api import BrowserContext, Page

from recommendations import catalog, tracking
from recommendations.conf import rec_settings
from recommendations.engine.precompute import run_precompute
from recommendations.models import Event
from shop.models import Category, Product
from tests.factories import make_brand, make_category, make_product, make_user

CATALOG = {
    "Kitchen": ["Cast Iron Skillet", "Chef's Knife", "Oak Cutting Board", "Pepper Mill", "Enamel Kettle"],
    "Coffee": ["Espresso Roast", "Decaf Colombian", "Pour-over Dripper", "Burr Grinder", "Milk Frother"],
    "Camping": ["Two-person Tent", "Down Sleeping Bag", "Trail Stove", "Headlamp", "Water Filter"],
}
BRANDS = ["Copperline", "Northwind", "Fieldcraft"]
SHOPPER_PASSWORD = "correct-horse-battery"


@dataclass
class SmallShop:
    categories: list[Category]
    products: list[Product]
    shopper: Any  # a registered user with a history; log in with SHOPPER_PASSWORD
    password: str = SHOPPER_PASSWORD
    by_name: dict[str, Product] = field(default_factory=dict)

    def in_category(self, category: Category) -> list[Product]:
        return [p for p in self.products if p.category_id == category.pk]

    def by_id(self, product_id: str | int) -> Product:
        return next(p for p in self.products if str(p.pk) == str(product_id))


def build_shop(visitors_per_category: int = 6, seed: int = 0) -> SmallShop:
    """Catalog, browsing history and a finished precompute; deterministic for a given seed."""
    rng = random.Random(seed)
    brands = [make_brand(name, slug=name.lower()) for name in BRANDS]
    categories, products = [], []
    for c, (category_name, names) in enumerate(CATALOG.items()):
        category = make_category(category_name, slug=category_name.lower())
        categories.append(category)
        for i, name in enumerate(names):
            products.append(
                make_product(
                    name,
                    slug=f"{category.slug}-{i + 1}",
                    category=category,
                    brand=brands[(c + i) % len(brands)],
                    price=Decimal(f"{9 + 7 * i + c}.99"),
                    stock=25,
                    description=f"{name}: a {category_name.lower()} favourite, chosen for the demo shop.",
                    created_at=timezone.now() - timedelta(days=30 - 2 * i),
                )
            )
    catalog.sync_products()

    now = timezone.now()
    events = []
    for category in categories:
        shelf = [p for p in products if p.category_id == category.pk]
        for _ in range(visitors_per_category):
            visitor = uuid.uuid4().hex
            started = now - timedelta(hours=rng.uniform(4, 72))
            for step, product in enumerate(rng.sample(shelf, k=4)):
                at = started + timedelta(minutes=2 * step)
                events.append(tracking.build_event("view", visitor_id=visitor, product_id=product.pk, occurred_at=at))
                if step == 3:
                    events.append(
                        tracking.build_event("add_to_cart", visitor_id=visitor, product_id=product.pk, occurred_at=at)
                    )
    shopper = make_user("e2e-shopper", password=SHOPPER_PASSWORD, email="shopper@example.com")
    earlier = now - timedelta(hours=3)  # before any browser session: the stored list speaks alone
    for product in [p for p in products if p.category_id == categories[1].pk][:2]:
        events.append(tracking.build_event("view", user_id=shopper.pk, product_id=product.pk, occurred_at=earlier))
    tracking.store_events(events)
    run_precompute()
    return SmallShop(categories, products, shopper, by_name={p.name: p for p in products})


def visitor_id(context: BrowserContext) -> str:
    """The anonymous visitor id the shop gave this browser (its cookie), or "" before the first page."""
    name = rec_settings.VISITOR_COOKIE_NAME
    return next((c["value"] for c in context.cookies() if c["name"] == name), "")


def wait_for_event(page: Page | None = None, timeout: float = 5.0, **filters: Any) -> Event:
    """The first stored Event matching `filters` (Event.objects.filter lookups), polling until `timeout` seconds.

    The tracker sends in the background (a beacon on click or page hide, else after 2 s), so a browser test can
    only wait for its events. With a page, the wait keeps Playwright's loop turning (page.wait_for_timeout).
    """
    deadline = time.monotonic() + timeout
    while True:
        event = Event.objects.filter(**filters).order_by("pk").first()
        if event is not None:
            return event
        if time.monotonic() >= deadline:
            newest = list(
                Event.objects.order_by("-pk").values_list("event_type", "placement", "recommendation_id", "product_id")[
                    :10
                ]
            )
            raise AssertionError(f"no event matching {filters} within {timeout}s; newest events: {newest}")
        if page is not None:
            page.wait_for_timeout(100)
        else:
            time.sleep(0.1)
