"""Small shops with real history for browser tests, and a wait for the events a page sends in the background.

`build_shop` writes what a live server needs to render every block: categories, brands and products with their
engine profiles, shoppers who browsed within categories (so similar products and trending exist), one registered
shopper with a history of their own (so a logged-in "Recommended for you" has a stored list), and a precompute.

`build_journey_shop` adds what the purchase surfaces need: past orders (coffee beans re-bought by several
shoppers, beans and a grinder in the same order more than once, so `buy_again` and `bought_together` lists exist),
a category nobody browsed lately (so a visitor who browses it visibly moves "Recommended for you") and a staff
login for the admin.
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
from recommendations.lists.precompute import run_precompute
from recommendations.models import Event
from shop.models import Category, Order, OrderLine, Product
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
    categories, products = _make_catalog(CATALOG, BRANDS)
    now = timezone.now()
    events = []
    for category in categories:
        events += _browsing(rng, _shelf(products, category), visitors_per_category, now, hours=(4, 72))
    shopper = make_user("e2e-shopper", password=SHOPPER_PASSWORD, email="shopper@example.com")
    earlier = now - timedelta(hours=3)  # before any browser session: the stored list speaks alone
    for product in _shelf(products, categories[1])[:2]:
        events.append(tracking.build_event("view", user_id=shopper.pk, product_id=product.pk, occurred_at=earlier))
    tracking.store_events(events)
    run_precompute()
    return SmallShop(categories, products, shopper, by_name={p.name: p for p in products})


JOURNEY_CATALOG = {
    **CATALOG,
    "Tea": ["Sencha Green", "Earl Grey Loose Leaf", "Tea Strainer", "Glass Teapot", "Matcha Whisk"],
    "Garden": ["Watering Can", "Pruning Shears", "Seed Tray", "Garden Gloves", "Compost Bin"],
}
JOURNEY_BRANDS = [*BRANDS, "Hearthstone", "Bramble"]
QUIET_CATEGORY = "Camping"  # browsed only 10 to 13 days ago: on its own shelf, but not trending shop-wide
REPEAT_PRODUCT = "Espresso Roast"  # the coffee beans people buy again
PARTNER_PRODUCT = "Burr Grinder"  # bought in the same order as the beans, more than once
SECOND_PARTNER = "Pour-over Dripper"  # bought with the beans twice: "Frequently bought together" needs two items
STAFF_USERNAME, STAFF_PASSWORD = "e2e-staff", "staff-horse-battery"


@dataclass
class JourneyShop(SmallShop):
    quiet: Category | None = None  # no recent browsing: absent from trending shop-wide, present on its shelf
    repeat: Product | None = None
    partner: Product | None = None
    staff: Any = None  # a superuser for the admin; log in with STAFF_PASSWORD
    staff_password: str = STAFF_PASSWORD


def build_journey_shop(visitors_per_category: int = 6, seed: int = 0) -> JourneyShop:
    """Five categories, browsing, past orders and a precompute; deterministic for a given seed.

    Past orders (all older than the trending window, so they shape the purchase lists, not trending):
    the registered shopper bought the beans alone three times, 20 days apart (so they are due again); four other
    shoppers bought them twice each, three of those with the grinder in the first order, two with the dripper. That
    gives a shared buy-again list holding the beans (5 of 5 buyers re-bought them) and bought-together lists pairing
    beans and grinder (3 orders, over the minimum of 2) and beans and dripper (2 orders): the beans' "Frequently bought
    together" has the two items a block needs. The shopper never bought the grinder, so it may be recommended.
    """
    rng = random.Random(seed)
    categories, products = _make_catalog(JOURNEY_CATALOG, JOURNEY_BRANDS)
    by_name = {p.name: p for p in products}
    quiet = next(c for c in categories if c.name == QUIET_CATEGORY)
    repeat, partner = by_name[REPEAT_PRODUCT], by_name[PARTNER_PRODUCT]
    now = timezone.now()
    events = []
    for category in categories:
        hours = (240, 312) if category == quiet else (4, 72)
        events += _browsing(rng, _shelf(products, category), visitors_per_category, now, hours=hours)

    shopper = make_user(
        "e2e-shopper", password=SHOPPER_PASSWORD, email="shopper@example.com", first_name="Sam", last_name="Shopper"
    )
    for days in (55, 35, 15):
        events += _past_order(now - timedelta(days=days), [repeat], user=shopper)
    for n in range(4):
        buyer = f"e2e-buyer-{n + 1}"
        first = [repeat, partner] if n < 3 else [repeat]
        if n in (0, 3):
            first.append(by_name[SECOND_PARTNER])
        events += _past_order(now - timedelta(days=40 + n), first, buyer=buyer, order_id=f"past-{n + 1}-a")
        events += _past_order(now - timedelta(days=20 + n), [repeat], buyer=buyer, order_id=f"past-{n + 1}-b")
    tracking.store_events(events)
    run_precompute()
    staff = make_user(STAFF_USERNAME, password=STAFF_PASSWORD, is_staff=True, is_superuser=True)
    return JourneyShop(
        categories,
        products,
        shopper,
        by_name=by_name,
        quiet=quiet,
        repeat=repeat,
        partner=partner,
        staff=staff,
    )


def _make_catalog(names: dict[str, list[str]], brand_names: list[str]) -> tuple[list[Category], list[Product]]:
    brands = [make_brand(name, slug=name.lower()) for name in brand_names]
    categories, products = [], []
    for c, (category_name, product_names) in enumerate(names.items()):
        category = make_category(category_name, slug=category_name.lower())
        categories.append(category)
        for i, name in enumerate(product_names):
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
    return categories, products


def _shelf(products: list[Product], category: Category) -> list[Product]:
    return [p for p in products if p.category_id == category.pk]


def _browsing(
    rng: random.Random, shelf: list[Product], visitors: int, now: Any, hours: tuple[float, float]
) -> list[Event]:
    """Anonymous visitors who each viewed four products of one shelf and put the last in their cart."""
    events = []
    for _ in range(visitors):
        visitor = uuid.uuid4().hex
        started = now - timedelta(hours=rng.uniform(*hours))
        for step, product in enumerate(rng.sample(shelf, k=4)):
            at = started + timedelta(minutes=2 * step)
            events.append(tracking.build_event("view", visitor_id=visitor, product_id=product.pk, occurred_at=at))
            if step == 3:
                events.append(
                    tracking.build_event("add_to_cart", visitor_id=visitor, product_id=product.pk, occurred_at=at)
                )
    return events


def _past_order(
    when: Any, products: list[Product], *, user: Any = None, buyer: str = "", order_id: str = ""
) -> list[Event]:
    """The purchase events of one order, as checkout records them (one per line, the order id in the context).

    For a registered `user` the Order itself is written too, so their account page lists it; other buyers are
    only a user id in the event log, as after an import.
    """
    if user is not None:
        order = Order.objects.create(
            user=user, email=user.email, full_name=user.get_full_name(), address="1 Demo Street", created_at=when
        )
        lines = OrderLine.objects.bulk_create(
            OrderLine(order=order, product=p, quantity=1, unit_price=p.price) for p in products
        )
        order.total = sum(line.line_total for line in lines)
        order.save(update_fields=["total"])
        buyer, order_id = str(user.pk), str(order.pk)
    return [
        tracking.build_event(
            "purchase",
            user_id=buyer,
            product_id=p.pk,
            value=p.price,
            occurred_at=when,
            context={"order_id": order_id},
        )
        for p in products
    ]


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
