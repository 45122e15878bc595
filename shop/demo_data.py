"""The synthetic shop behind `generate_demo_data`: a catalog, shoppers with tastes, and their sessions.

Everything is drawn from one numpy Generator seeded by the caller, so the same seed and sizes give the same shop
(the same products, shoppers, events and orders, at the same offsets from the end of the simulated period).

The model, in short:
- Categories have a price level (lognormal around a median), brands (a few shared between categories) and their
  own words, which make product names, descriptions and search queries. Coffee, tea and skincare are consumables.
- Most of the catalog predates the simulated period; the rest arrives during it, and a product is only seen
  once it exists. Popularity inside a category is Zipf-like, so a few products carry most of the traffic.
- A shopper has a Dirichlet taste over categories (concentrated on one to three), a few favourite brands and a
  price level. A session picks a category by taste, sometimes starts with a search, views a few products drawn
  by popularity x price fit x brand preference, and runs the funnel: view -> add to cart -> checkout, which
  makes a real Order with OrderLines and one purchase event per line. Buyers of consumables come back to
  rebuy them; a durable product a shopper already bought is only looked at, not bought again. Some main products
  have an accessory (a grinder for coffee, a headlamp for a tent) that often goes into the same order.
  About 30% of sessions are anonymous visitors (visitor id only; they may check out as guests).
- The pages carry recommendation blocks, so the analytics have a history to show: the landing page a "for_you"
  block (a "trending" one for visitors), each product page a "similar" block. Some views come through the block on
  the page before (a click on it); an add to cart or purchase of a clicked product is attributed to that block as
  `tracking.attribute` does it. These draws use their own random stream, so every other draw of a seed is as it was.

Shoppers are generated and written a chunk at a time, so 100k shoppers never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils.text import slugify

from recommendations import catalog
from recommendations.conf import rec_settings
from recommendations.importing import EventWriter
from recommendations.models import ProductProfile
from recommendations.tracking import build_event
from shop.models import Brand, Category, Favorite, Order, OrderLine, Product

DAY = 86_400.0
USER_CHUNK = 1000
WRITE_BATCH = 1000
EVENT_BATCH = 20_000
ANONYMOUS_SHARE = 0.3  # of all sessions
NEW_PRODUCT_SHARE = 0.25  # of the catalog, arriving during the simulated period
BASE_CATALOG_AGE_DAYS = 365  # how far before the period the oldest products were added
OUT_OF_STOCK_SHARE = 0.07
SESSIONS_PER_DAY = 0.2  # a typical registered shopper's rate; individual rates vary a lot around it
CART_RATE = 0.14  # per product view
REMOVE_RATE = 0.12  # per session with something in the cart: one line is taken out again
CHECKOUT_RATE = {"user": 0.55, "visitor": 0.35}  # per session with something in the cart
FAVORITE_RATE = 0.04  # per product view, logged-in shoppers only
SEARCH_RATE = 0.22  # per session
REBUY_RATE = 0.6  # share of consumable purchases that start a rebuy habit
SESSION_MARGIN = 3600.0  # seconds before "now" by which every session has started
PRICE_WIDTH = 0.55  # how far (in log price) from their level shoppers still look
ACCESSORY_RATE = 0.4  # per ordered product that has an accessory: the accessory joins the order
# Which products have an accessory: (category, name words or () for all, accessory category, accessory name words).
# Each such product gets one accessory, drawn by popularity, so the pairs recur across orders.
ACCESSORIES: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("coffee", (), "kitchen", ("French Press", "Burr Grinder", "Pour-Over Set")),
    ("tea", (), "kitchen", ("Teapot", "Electric Kettle")),
    ("running-shoes", (), "fitness", ("Foam Roller", "Resistance Bands")),
    ("camping", ("Tent", "Sleeping Bag", "Backpack"), "camping", ("Headlamp", "Water Filter", "Trekking Poles")),
    ("kitchen", ("Chef's Knife",), "kitchen", ("Cutting Board",)),
    ("skincare", ("Cleanser", "Face Cream"), "skincare", ("Toner", "Serum", "Night Cream")),
    ("fitness", ("Yoga Mat",), "fitness", ("Foam Roller", "Resistance Bands")),
)
# Recommendation blocks: items per block, the share of views that came through the block on the page before, and
# what the block's items are stamped with as their source (as serving stamps them).
BLOCK_SIZE = {"for_you": 8, "trending": 8, "similar": 6}
BLOCK_SOURCE = {"for_you": "stored", "trending": "trending", "similar": "similar"}
BLOCK_CLICK_SHARE = 0.1  # so a block is clicked about one time in ten, a plausible CTR
LANDING_SECONDS = 20.0  # the landing page (and its block) comes this long before a session's first product view
ATTRIBUTED = ("add_to_cart", "purchase")


@dataclass(frozen=True)
class CategorySpec:
    slug: str
    name: str
    median_price: float
    price_sigma: float
    consumable: bool
    share: float
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    variants: tuple[str, ...]
    phrases: tuple[str, ...]
    uses: tuple[str, ...]


CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec(
        "coffee", "Coffee", 14.0, 0.35, True, 0.12,
        ("Northwind", "Bean & Barrel", "Kaldi", "Morning Ritual", "Harbor Coffee"),
        ("Dark", "Medium", "Light", "Bold", "Smooth", "Single-Origin", "Organic", "Decaf"),
        ("Espresso Roast", "Breakfast Blend", "French Roast", "Colombian", "Ethiopian Yirgacheffe", "Sumatra",
         "Cold Brew Blend", "Guatemalan Antigua"),
        ("250 g", "500 g", "1 kg", "Whole Bean", "Ground"),
        ("notes of dark chocolate and caramel", "a bright citrus acidity", "beans roasted in small batches",
         "a syrupy body and low acidity", "beans sourced from smallholder farms", "a nutty, toasty finish"),
        ("Perfect for espresso and milk drinks.", "Brew it as pour-over, in a French press or a moka pot.",
         "A dependable morning cup."),
    ),
    CategorySpec(
        "tea", "Tea", 9.0, 0.35, True, 0.08,
        ("Northwind", "Leaf & Kettle", "Jade Mountain", "Teasmith", "Morning Ritual"),
        ("Organic", "Loose-Leaf", "Premium", "Calming", "Spiced", "First Flush"),
        ("Earl Grey", "Sencha", "Jasmine Green", "Masala Chai", "Darjeeling", "Rooibos", "Chamomile", "Oolong",
         "Matcha", "English Breakfast"),
        ("20 bags", "50 bags", "100 g tin"),
        ("hand-picked whole leaves", "bergamot and citrus notes", "a smooth, malty body", "no caffeine at all",
         "leaves rolled by hand", "a floral, delicate cup"),
        ("Steep for three minutes in water just off the boil.", "Lovely with a splash of milk.",
         "Made for a quiet evening."),
    ),
    CategorySpec(
        "books", "Books", 16.0, 0.3, False, 0.16,
        ("Penguin Row", "Harbor Press", "Lantern Books", "Oak & Quill", "Little Oak"),
        ("The Silent", "The Last", "A Brief", "The Hidden", "Midnight", "The Complete", "The Little"),
        ("Garden", "History of Tea", "Cartographer", "Lighthouse", "Guide to Sourdough", "Detective", "Orchard",
         "Mountain Diaries", "Book of Knots"),
        ("Paperback", "Hardcover", "Illustrated Edition"),
        ("a gripping mystery set in a coastal town", "a warm and funny family saga", "an award-winning debut",
         "step-by-step recipes and techniques", "a sweeping historical story", "beautiful illustrations"),
        ("A perfect gift for curious readers.", "A favourite of book clubs.", "Hard to put down."),
    ),
    CategorySpec(
        "headphones", "Headphones", 90.0, 0.6, False, 0.08,
        ("Sonora", "Auralis", "Basswave", "Kestrel", "Voltline"),
        ("Pro", "Air", "Studio", "Active", "Lite", "Max"),
        ("Wireless Earbuds", "Over-Ear Headphones", "Noise-Cancelling Headphones", "Sport Earbuds",
         "On-Ear Headphones", "Studio Monitors"),
        ("Black", "White", "Midnight Blue"),
        ("active noise cancellation", "up to 30 hours of battery life", "Bluetooth multipoint pairing",
         "deep bass and crisp highs", "a sweat-resistant design", "memory-foam ear cushions"),
        ("Great for commuting and travel.", "Built for workouts and running.", "Made for long listening sessions."),
    ),
    CategorySpec(
        "running-shoes", "Running shoes", 110.0, 0.3, False, 0.08,
        ("Stride", "Peak & Pine", "Trailhawk", "Velocity", "Kestrel"),
        ("Ultra", "Swift", "Cloud", "Tempo", "Grip"),
        ("Road Runner", "Trail Shoe", "Racing Flat", "Cushioned Trainer", "Stability Shoe"),
        ("Men's", "Women's"),
        ("responsive foam cushioning", "a breathable mesh upper", "a lugged outsole for trails",
         "a carbon plate for race day", "a wide toe box", "a light, fast feel"),
        ("Made for daily training miles.", "Built for muddy trails.", "Ready for race day."),
    ),
    CategorySpec(
        "kitchen", "Kitchen", 35.0, 0.7, False, 0.12,
        ("Voltline", "Copper & Cast", "Northwind", "Kitchenary", "Bean & Barrel"),
        ("Classic", "Professional", "Compact", "Enamelled", "Stainless"),
        ("Chef's Knife", "Cast Iron Skillet", "Electric Kettle", "French Press", "Burr Grinder", "Dutch Oven",
         "Cutting Board", "Pour-Over Set", "Stand Mixer", "Teapot"),
        ("Small", "Large", "Set of 2"),
        ("high-carbon steel", "a pre-seasoned, oven-safe body", "even heat from edge to edge",
         "dishwasher-safe parts", "precise temperature control", "a build that lasts a lifetime"),
        ("A kitchen essential for home cooks.", "A thoughtful housewarming gift.",
         "Made for brewing coffee and tea at home."),
    ),
    CategorySpec(
        "toys", "Toys", 25.0, 0.5, False, 0.10,
        ("Little Oak", "Brightblocks", "Tumble & Co.", "Starling Toys"),
        ("Classic", "Deluxe", "Rainbow", "Junior", "Magnetic"),
        ("Building Blocks", "Wooden Train Set", "Jigsaw Puzzle", "Plush Bear", "Science Kit", "Board Game",
         "Marble Run"),
        ("Starter Set", "Big Box", "Travel Size"),
        ("sustainably sourced wood", "creative, open-ended play", "hundreds of colourful pieces",
         "safe, non-toxic paints", "fun for ages 3 and up", "hours of family fun"),
        ("A great birthday present.", "Perfect for rainy afternoons.", "Builds fine motor skills."),
    ),
    CategorySpec(
        "skincare", "Skincare", 22.0, 0.45, True, 0.10,
        ("Dewdrop", "Botanica", "Clearskin", "Pure Ritual", "Morning Ritual"),
        ("Hydrating", "Gentle", "Vitamin C", "Calming", "Daily", "Renewing"),
        ("Face Cream", "Cleanser", "Serum", "Sunscreen SPF 50", "Lip Balm", "Night Cream", "Toner", "Body Lotion"),
        ("50 ml", "100 ml", "200 ml"),
        ("hyaluronic acid", "a fragrance-free formula for sensitive skin", "shea butter and vitamin E",
         "a dermatologist-tested formula", "a light, non-greasy texture", "soothing aloe vera"),
        ("Apply morning and evening.", "Suits all skin types.", "Part of a simple daily routine."),
    ),
    CategorySpec(
        "camping", "Camping", 60.0, 0.7, False, 0.08,
        ("Peak & Pine", "Trailhawk", "Northwind", "Summit Gear"),
        ("Ultralight", "Two-Person", "Waterproof", "Four-Season", "Compact"),
        ("Tent", "Sleeping Bag", "Headlamp", "Camping Stove", "Water Filter", "Backpack", "Trekking Poles"),
        ("Green", "Orange", "Grey"),
        ("a pack size smaller than a loaf of bread", "comfort down to -5 °C", "waterproof ripstop fabric",
         "a set-up time of minutes", "USB-C charging", "years of testing on long trails"),
        ("Ready for weekend adventures.", "Built for backpacking trips.", "A reliable companion in the hills."),
    ),
    CategorySpec(
        "fitness", "Fitness", 30.0, 0.6, False, 0.08,
        ("Stride", "Zenflow", "Ironleaf", "Velocity"),
        ("Non-Slip", "Eco", "Adjustable", "Premium", "Travel"),
        ("Yoga Mat", "Resistance Bands", "Foam Roller", "Kettlebell", "Jump Rope", "Dumbbell Set"),
        ("Light", "Medium", "Heavy"),
        ("extra thickness for joint support", "natural rubber", "several resistance levels",
         "a size that suits small spaces", "a textured, grippy surface"),
        ("Great for home workouts.", "Made for recovery after a run.", "Ideal for daily stretching."),
    ),
)  # fmt: skip

FIRST_NAMES = ("Alex", "Sam", "Maria", "Jonas", "Aiko", "Priya", "Lena", "Omar", "Chloe", "Mateo", "Nora", "Ivan")
LAST_NAMES = ("Smith", "Garcia", "Müller", "Tanaka", "Okafor", "Rossi", "Novak", "Silva", "Haddad", "Larsen")
STREETS = ("Oak", "Harbor", "Mill", "Station", "Elm", "Bridge", "Church", "Park")
CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Greenville")
# Hours of the day weighted by how busy the shop is (quiet at night, busiest in the evening).
HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.5, 3.5, 4, 4, 3.5, 3.5, 4, 4.5, 5, 6, 6.5, 6, 4, 2]
)
HOUR_CDF = np.cumsum(HOUR_WEIGHTS) / HOUR_WEIGHTS.sum()


@dataclass
class Catalog:
    """The generated products as arrays (index = generation order), plus per-category views sorted by arrival."""

    specs: tuple[CategorySpec, ...]
    category: np.ndarray  # int, index into specs
    brand: np.ndarray  # int, index into brand_names
    brand_names: list[str]
    log_price: np.ndarray
    prices: list[Decimal]
    created: np.ndarray  # seconds from the start of the simulated period (negative: before it)
    popularity: np.ndarray
    consumable: np.ndarray  # bool
    names: list[str]
    search_terms: list[list[str]]  # per category
    by_category: list[np.ndarray] = field(default_factory=list)  # product indices sorted by arrival
    created_sorted: list[np.ndarray] = field(default_factory=list)
    pks: list[int] = field(default_factory=list)
    accessory: np.ndarray | None = None  # per product, the index of its accessory or -1


@dataclass
class Shopper:
    user_index: int | None  # position in the chunk's user list, None for an anonymous visitor
    visitor_id: str
    taste_cdf: np.ndarray
    price_level: np.ndarray  # per category, log price the shopper aims at
    brands: frozenset[int]
    weights: dict[int, np.ndarray] = field(default_factory=dict)  # category -> cumulative product weights
    owned: set[int] = field(default_factory=set)  # durable products bought


@dataclass
class Stats:
    users: int = 0
    visitors: int = 0
    sessions: int = 0
    events: int = 0
    orders: int = 0
    favorites: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


# One simulated event before it is written: (type, shopper, product index or -1, quantity, value, query,
# seconds from the period start, order index in the chunk or -1, context)
SimEvent = tuple[str, int, int, int, Decimal | None, str, float, int, dict[str, Any] | None]


class DemoShopGenerator:
    """Generates and writes one synthetic shop; `run()` does it all."""

    def __init__(
        self,
        *,
        users: int,
        products: int,
        days: int,
        seed: int,
        now: datetime,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.n_users, self.n_products, self.days, self.seed = users, products, days, seed
        self.rng = np.random.default_rng(seed)
        # Accessories draw from their own stream, so adding them left every other draw of a seed as it was.
        self.accessory_rng = np.random.default_rng([seed, 1])
        self.block_rng = np.random.default_rng([seed, 2])  # recommendation blocks and clicks on them, likewise
        self.block_counter = 0
        # (shopper ref, product) -> clicks on it in a block: (seconds, placement, recommendation id), per chunk
        self.block_clicks: dict[tuple[int, int], list[tuple[float, str, str]]] = {}
        self.now = now
        self.start = now - timedelta(days=days)
        self.period = days * DAY
        self.progress = progress
        self.stats = Stats()
        self.event_counter = 0
        self.sales = np.zeros(products, dtype=np.int64)

    # -- catalog ---------------------------------------------------------------------------------------------------

    def make_catalog(self) -> Catalog:
        rng, specs, n = self.rng, CATEGORIES, self.n_products
        shares = np.array([s.share for s in specs])
        shares /= shares.sum()
        # Every category gets products even in a tiny catalog; the rest follow the shares.
        category = np.concatenate(
            [np.arange(min(n, len(specs))), rng.choice(len(specs), size=max(n - len(specs), 0), p=shares)]
        )
        brand_names = sorted({b for s in specs for b in s.brands})
        brand_code = {b: i for i, b in enumerate(brand_names)}
        brand_pull = rng.lognormal(0.0, 0.5, size=len(brand_names))
        brand = np.empty(n, dtype=np.int64)
        log_price = np.empty(n)
        names: list[str] = []
        seen_names: set[str] = set()
        for i in range(n):
            spec = specs[category[i]]
            # Earlier brands in a category are its big names.
            ranks = 1.0 / np.arange(1, len(spec.brands) + 1) ** 0.7
            b = spec.brands[int(rng.choice(len(spec.brands), p=ranks / ranks.sum()))]
            brand[i] = brand_code[b]
            log_price[i] = rng.normal(np.log(spec.median_price), spec.price_sigma)
            adjective = spec.adjectives[rng.integers(len(spec.adjectives))]
            noun = spec.nouns[rng.integers(len(spec.nouns))]
            name = f"{b} {adjective} {noun}"
            if name in seen_names or rng.random() < 0.3:
                name = f"{name}, {spec.variants[rng.integers(len(spec.variants))]}"
            suffix = 2
            base = name
            while name in seen_names:
                name, suffix = f"{base} ({suffix})", suffix + 1
            seen_names.add(name)
            names.append(name)
        prices = [_shop_price(float(np.exp(lp))) for lp in log_price]
        log_price = np.log(np.array([float(p) for p in prices]))
        is_new = rng.random(n) < NEW_PRODUCT_SHARE
        created = np.where(
            is_new,
            rng.uniform(0.0, self.period, size=n),
            -rng.uniform(0.0, BASE_CATALOG_AGE_DAYS * DAY, size=n),
        )
        popularity = np.empty(n)
        for c in range(len(specs)):
            members = np.flatnonzero(category == c)
            ranks = rng.permutation(len(members)) + 1
            popularity[members] = 1.0 / ranks**0.8
        popularity *= brand_pull[brand]
        consumable = np.array([specs[c].consumable for c in category], dtype=bool)
        search_terms = [
            sorted({*(noun.lower() for noun in s.nouns), *(b.lower() for b in s.brands), s.name.lower()}) for s in specs
        ]
        cat = Catalog(
            specs=specs,
            category=category,
            brand=brand,
            brand_names=brand_names,
            log_price=log_price,
            prices=prices,
            created=created,
            popularity=popularity,
            consumable=consumable,
            names=names,
            search_terms=search_terms,
        )
        for c in range(len(specs)):
            members = np.flatnonzero(category == c)
            order = members[np.argsort(created[members], kind="stable")]
            cat.by_category.append(order)
            cat.created_sorted.append(created[order])
        cat.accessory = self.pick_accessories(cat)
        return cat

    def pick_accessories(self, cat: Catalog) -> np.ndarray:
        """One accessory per product that ACCESSORIES names, fixed for the run so the pair recurs across orders."""
        accessory = np.full(len(cat.names), -1, dtype=np.int64)
        slugs = [s.slug for s in cat.specs]
        for category, words, accessory_category, accessory_words in ACCESSORIES:
            if category not in slugs or accessory_category not in slugs:
                continue
            in_category = cat.category == slugs.index(category)
            anchors = [i for i in np.flatnonzero(in_category) if not words or any(w in cat.names[i] for w in words)]
            candidates = np.array(
                [
                    i
                    for i in np.flatnonzero(cat.category == slugs.index(accessory_category))
                    if any(w in cat.names[i] for w in accessory_words)
                ],
                dtype=np.int64,
            )
            for i in anchors:
                pool = candidates[candidates != i]
                if pool.size:
                    weights = cat.popularity[pool]
                    accessory[i] = int(pool[self.accessory_rng.choice(pool.size, p=weights / weights.sum())])
        return accessory

    def describe(self, cat: Catalog, i: int) -> str:
        spec = cat.specs[cat.category[i]]
        first, second = self.rng.choice(len(spec.phrases), size=2, replace=False)
        use = spec.uses[self.rng.integers(len(spec.uses))]
        return (
            f"{cat.names[i]}: a {spec.name.lower()} pick with {spec.phrases[first]} and {spec.phrases[second]}. {use}"
        )

    def write_catalog(self, cat: Catalog) -> None:
        categories = {s.slug: Category(name=s.name, slug=s.slug) for s in cat.specs}
        Category.objects.bulk_create(categories.values(), batch_size=WRITE_BATCH)
        category_pk = dict(Category.objects.filter(slug__in=categories).values_list("slug", "pk"))
        Brand.objects.bulk_create(
            [Brand(name=b, slug=slugify(b)) for b in cat.brand_names], batch_size=WRITE_BATCH, ignore_conflicts=True
        )
        brand_pk = dict(Brand.objects.filter(name__in=cat.brand_names).values_list("name", "pk"))
        slugs: set[str] = set()
        products = []
        for i in range(self.n_products):
            slug = _unique_slug(cat.names[i], slugs)
            in_stock = self.rng.random() >= OUT_OF_STOCK_SHARE
            products.append(
                Product(
                    name=cat.names[i],
                    slug=slug,
                    description=self.describe(cat, i),
                    category_id=category_pk[cat.specs[cat.category[i]].slug],
                    brand_id=brand_pk[cat.brand_names[cat.brand[i]]],
                    price=cat.prices[i],
                    stock=int(self.rng.integers(3, 250)) if in_stock else 0,
                    is_consumable=bool(cat.consumable[i]),
                    created_at=self.at(float(cat.created[i])),
                )
            )
            if len(products) >= WRITE_BATCH:
                cat.pks += [p.pk for p in Product.objects.bulk_create(products, batch_size=WRITE_BATCH)]
                products = []
        if products:
            cat.pks += [p.pk for p in Product.objects.bulk_create(products, batch_size=WRITE_BATCH)]

    # -- shoppers and sessions -------------------------------------------------------------------------------------

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def new_shopper(self, cat: Catalog, user_index: int | None) -> Shopper:
        rng, n_cat = self.rng, len(cat.specs)
        focus = rng.choice(n_cat, size=int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2])), replace=False)
        alpha = np.full(n_cat, 0.08)
        alpha[focus] = 3.0
        taste = rng.dirichlet(alpha)
        level = rng.normal(0.0, 0.35)  # some shoppers buy cheap across the board, some premium
        price_level = np.array([np.log(s.median_price) for s in cat.specs]) + level
        favourite_brands = frozenset(
            int(cat.brand_names.index(cat.specs[c].brands[rng.integers(len(cat.specs[c].brands))])) for c in focus
        )
        return Shopper(
            user_index=user_index,
            visitor_id=rng.bytes(16).hex(),
            taste_cdf=np.cumsum(taste),
            price_level=price_level,
            brands=favourite_brands,
        )

    def product_weights(self, cat: Catalog, shopper: Shopper, c: int) -> np.ndarray:
        """Cumulative pick weights over category c's products in arrival order (cached per shopper)."""
        cached = shopper.weights.get(c)
        if cached is not None:
            return cached
        members = cat.by_category[c]
        fit = np.exp(-0.5 * ((cat.log_price[members] - shopper.price_level[c]) / PRICE_WIDTH) ** 2)
        brand_boost = np.where(np.isin(cat.brand[members], list(shopper.brands)), 3.0, 1.0)
        cumulative = np.cumsum(cat.popularity[members] * (0.05 + fit) * brand_boost)
        shopper.weights[c] = cumulative
        return cumulative

    def pick_products(self, cat: Catalog, shopper: Shopper, c: int, when: float, k: int) -> list[int]:
        available = int(np.searchsorted(cat.created_sorted[c], when, side="right"))
        if available == 0:
            return []
        cumulative = self.product_weights(cat, shopper, c)
        draws = self.rng.random(k) * cumulative[available - 1]
        positions = np.minimum(np.searchsorted(cumulative, draws, side="right"), available - 1)
        return list(dict.fromkeys(int(cat.by_category[c][p]) for p in positions))

    def session_times(self, count: int) -> np.ndarray:
        days = self.rng.integers(0, self.days, size=count)
        hours = np.searchsorted(HOUR_CDF, self.rng.random(count))
        times = days * DAY + hours * 3600.0 + self.rng.random(count) * 3600.0
        # A session takes a few minutes; starting it early enough keeps its events out of the future.
        return np.sort(np.minimum(times, self.period - SESSION_MARGIN))

    def simulate_session(
        self,
        cat: Catalog,
        shopper_ref: int,
        shopper: Shopper,
        when: float,
        events: list[SimEvent],
        orders: list[tuple[int, float, list[tuple[int, int]]]],
        favorites: set[tuple[int, int]],
        rebuys: list[tuple[int, float]],
    ) -> None:
        rng = self.rng
        is_user = shopper.user_index is not None
        c = int(np.searchsorted(shopper.taste_cdf, rng.random() * shopper.taste_cdf[-1], side="right"))
        c = min(c, len(cat.specs) - 1)
        t = when
        searched = False
        if rng.random() < SEARCH_RATE:
            searched = True
            terms = cat.search_terms[c]
            query = terms[rng.integers(len(terms))]
            available = int(np.searchsorted(cat.created_sorted[c], t, side="right"))
            events.append(("search", shopper_ref, -1, 1, None, query, t, -1, {"results": available}))
            t += 5 + rng.exponential(20)
        viewed = self.pick_products(cat, shopper, c, t, min(1 + int(rng.geometric(0.4)), 10))
        # The cart as drawn. A durable product the shopper already bought is only looked at: it stays out of the
        # events and the order, but its draws are still made, so every other draw of a seed is as it was.
        cart: list[tuple[int, int]] = []
        # The page each view is reached from: the landing page's block first, then the last product page's.
        page_at, page_block, previous = max(when - LANDING_SECONDS, 0.0), "for_you" if is_user else "trending", -1
        for i, p in enumerate(viewed):
            price = cat.prices[p]
            through = not (i == 0 and searched) and self.block_rng.random() < BLOCK_CLICK_SHARE
            rec_id = self.show_block(
                cat, shopper_ref, shopper, c, page_at, page_block, events, p if through else -1, previous
            )
            if through and rec_id:
                click_at = max(t - 1.0, page_at, float(cat.created[p]))
                events.append(
                    ("click", shopper_ref, p, 1, None, "", click_at, -1, {"placement": page_block, "rec": rec_id})
                )
                self.block_clicks.setdefault((shopper_ref, p), []).append((click_at, page_block, rec_id))
            page_at, page_block, previous = t, "similar", p
            events.append(("view", shopper_ref, p, 1, price, "", t, -1, None))
            t += 10 + rng.exponential(50)
            if is_user and rng.random() < FAVORITE_RATE and (shopper_ref, p) not in favorites:
                favorites.add((shopper_ref, p))
                events.append(("favorite", shopper_ref, p, 1, price, "", t, -1, None))
                t += 2 + rng.exponential(5)
            if rng.random() < CART_RATE:
                quantity = self.quantity(cat, p)
                cart.append((p, quantity))
                if cat.consumable[p] or p not in shopper.owned:
                    events.append(("add_to_cart", shopper_ref, p, quantity, price * quantity, "", t, -1, None))
                t += 5 + rng.exponential(20)
        if cart and rng.random() < REMOVE_RATE:
            p, quantity = cart.pop(int(rng.integers(len(cart))))
            if cat.consumable[p] or p not in shopper.owned:
                events.append(("remove_from_cart", shopper_ref, p, quantity, cat.prices[p] * quantity, "", t, -1, None))
            t += 5 + rng.exponential(10)
        if cart and rng.random() < CHECKOUT_RATE["user" if is_user else "visitor"]:
            paid_at = t + 30 + rng.exponential(90)
            lines = [(p, q) for p, q in cart if cat.consumable[p] or p not in shopper.owned]
            if lines:
                basket = lines + self.add_accessories(cat, shopper_ref, shopper, t, lines, events)
                self.checkout(cat, shopper_ref, paid_at, basket, events, orders)
                shopper.owned.update(p for p, _quantity in basket if not cat.consumable[p])
            if is_user:
                for p, _quantity in cart:
                    if cat.consumable[p] and rng.random() < REBUY_RATE:
                        rebuys.append((p, t))

    def show_block(
        self,
        cat: Catalog,
        shopper_ref: int,
        shopper: Shopper,
        c: int,
        at: float,
        placement: str,
        events: list[SimEvent],
        include: int = -1,
        exclude: int = -1,
    ) -> str:
        """One block of `placement` shown at `at`: popular products of category c then available (with `include`, the
        product about to be clicked, and without `exclude`, the page's own); returns its recommendation id."""
        available = int(np.searchsorted(cat.created_sorted[c], at, side="right"))
        if available == 0:
            return ""
        size = BLOCK_SIZE[placement]
        cumulative = self.product_weights(cat, shopper, c)[:available]
        draws = self.block_rng.random(2 * size) * cumulative[-1]
        positions = np.minimum(np.searchsorted(cumulative, draws, side="right"), available - 1)
        items = [p for p in dict.fromkeys(int(cat.by_category[c][q]) for q in positions) if p not in (exclude, include)]
        items = items[: size - 1] if include >= 0 else items[:size]
        if include >= 0:
            items.insert(int(self.block_rng.integers(len(items) + 1)), include)
        if not items:
            return ""
        rec_id = f"demo-{self.seed}-block-{self.block_counter}"
        self.block_counter += 1
        sources = [BLOCK_SOURCE[placement]] * len(items)
        context = {"placement": placement, "rec": rec_id, "items": items, "sources": sources}
        events.append(("impression", shopper_ref, -1, 1, None, "", at, -1, context))
        return rec_id

    def block_click(self, shopper_ref: int, p: int, t: float) -> tuple[str, str] | None:
        """The latest click on product p by this shopper within ATTRIBUTION_HOURS before t: (placement, rec id)."""
        window = float(rec_settings.ATTRIBUTION_HOURS) * 3600.0
        best = None
        for click_at, placement, rec_id in self.block_clicks.get((shopper_ref, p), ()):
            if t - window <= click_at <= t and (best is None or click_at >= best[0]):
                best = (click_at, placement, rec_id)
        return (best[1], best[2]) if best else None

    def add_accessories(
        self,
        cat: Catalog,
        shopper_ref: int,
        shopper: Shopper,
        t: float,
        cart: list[tuple[int, int]],
        events: list[SimEvent],
    ) -> list[tuple[int, int]]:
        """On the way to checkout, some ordered products' accessories are viewed and added (all within 30 s)."""
        if cat.accessory is None:
            return []
        rng, in_cart = self.accessory_rng, {p for p, _ in cart}
        added: list[tuple[int, int]] = []
        for p, _quantity in cart:
            a = int(cat.accessory[p])
            if a < 0 or a in in_cart or a in shopper.owned or cat.created[a] > t or rng.random() >= ACCESSORY_RATE:
                continue
            in_cart.add(a)
            added.append((a, 1))
        moments = np.sort(rng.uniform(1.0, 29.0, size=2 * len(added)))
        for (a, quantity), view_at, cart_at in zip(added, moments[0::2], moments[1::2], strict=True):
            events.append(("view", shopper_ref, a, 1, cat.prices[a], "", t + view_at, -1, None))
            events.append(("add_to_cart", shopper_ref, a, quantity, cat.prices[a], "", t + cart_at, -1, None))
        return added

    def checkout(
        self,
        cat: Catalog,
        shopper_ref: int,
        t: float,
        cart: list[tuple[int, int]],
        events: list[SimEvent],
        orders: list[tuple[int, float, list[tuple[int, int]]]],
    ) -> None:
        order_index = len(orders)
        orders.append((shopper_ref, t, cart))
        for p, quantity in cart:
            events.append(("purchase", shopper_ref, p, quantity, cat.prices[p] * quantity, "", t, order_index, None))
            self.sales[p] += quantity

    def quantity(self, cat: Catalog, p: int) -> int:
        if cat.consumable[p]:
            return int(self.rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        return 1 if self.rng.random() < 0.93 else 2

    def rebuy_sessions(
        self,
        cat: Catalog,
        shopper_ref: int,
        rebuys: list[tuple[int, float]],
        events: list[SimEvent],
        orders: list[tuple[int, float, list[tuple[int, int]]]],
    ) -> int:
        """Consumable buyers come back every few weeks: view, add to cart, buy the same product again."""
        rng, sessions = self.rng, 0
        for p, first in rebuys:
            t = first
            while True:
                t += max(7.0, rng.normal(24.0, 6.0)) * DAY
                if t >= self.period - SESSION_MARGIN or rng.random() < 0.2:
                    break
                sessions += 1
                quantity = self.quantity(cat, p)
                events.append(("view", shopper_ref, p, 1, cat.prices[p], "", t, -1, None))
                events.append(("add_to_cart", shopper_ref, p, quantity, cat.prices[p] * quantity, "", t + 20, -1, None))
                self.checkout(cat, shopper_ref, t + 60, [(p, quantity)], events, orders)
        return sessions

    def simulate_chunk(self, cat: Catalog, first_user: int, count: int) -> None:
        """Generate `count` registered shoppers (plus their share of anonymous visitors) and write them."""
        rng = self.rng
        events: list[SimEvent] = []
        orders: list[tuple[int, float, list[tuple[int, int]]]] = []
        favorites: set[tuple[int, int]] = set()
        shoppers: list[Shopper] = []
        first_seen: list[float] = []
        last_seen: list[float] = []
        user_sessions = 0
        self.block_clicks = {}
        for u in range(count):
            shopper = self.new_shopper(cat, user_index=u)
            shoppers.append(shopper)
            rate = SESSIONS_PER_DAY * rng.lognormal(-0.4, 0.9)
            times = self.session_times(1 + int(rng.poisson(rate * self.days)))
            rebuys: list[tuple[int, float]] = []
            for when in times:
                self.simulate_session(cat, u, shopper, float(when), events, orders, favorites, rebuys)
            user_sessions += len(times) + self.rebuy_sessions(cat, u, rebuys, events, orders)
            first_seen.append(float(times[0]))
            last_seen.append(float(times[-1]))
            shopper.weights.clear()
        visitor_sessions_wanted = round(user_sessions * ANONYMOUS_SHARE / (1 - ANONYMOUS_SHARE))
        visitor_sessions = 0
        while visitor_sessions < visitor_sessions_wanted:
            ref = len(shoppers)
            shopper = self.new_shopper(cat, user_index=None)
            shoppers.append(shopper)
            times = self.session_times(1 + int(rng.poisson(0.6)))
            for when in times:
                self.simulate_session(cat, ref, shopper, float(when), events, orders, favorites, [])
            visitor_sessions += len(times)
            shopper.weights.clear()
        self.stats.sessions += user_sessions + visitor_sessions
        self.stats.visitors += len(shoppers) - count
        with transaction.atomic():
            user_pks = self.write_users(first_user, count, first_seen, last_seen)
            self.write_chunk(cat, first_user, shoppers, user_pks, events, orders, favorites)
        self.stats.users += count

    # -- writing ---------------------------------------------------------------------------------------------------

    def write_users(self, first_user: int, count: int, first_seen: list[float], last_seen: list[float]) -> list[int]:
        rng = self.rng
        User = get_user_model()
        users = []
        for u in range(count):
            number = first_user + u + 1
            joined = first_seen[u] - rng.exponential(60 * DAY)
            users.append(
                User(
                    username=f"demo_user_{number}",
                    email=f"demo_user_{number}@example.com",
                    first_name=FIRST_NAMES[rng.integers(len(FIRST_NAMES))],
                    last_name=LAST_NAMES[rng.integers(len(LAST_NAMES))],
                    # An unusable password: no hashing per user, and no one can log in as a generated shopper.
                    password=make_password(None),
                    date_joined=self.at(joined),
                    last_login=self.at(last_seen[u]),
                )
            )
        return [user.pk for user in User.objects.bulk_create(users, batch_size=WRITE_BATCH)]

    def write_chunk(
        self,
        cat: Catalog,
        first_user: int,
        shoppers: list[Shopper],
        user_pks: list[int],
        events: list[SimEvent],
        orders: list[tuple[int, float, list[tuple[int, int]]]],
        favorites: set[tuple[int, int]],
    ) -> None:
        rng = self.rng
        order_rows = []
        for shopper_ref, t, cart in orders:
            shopper = shoppers[shopper_ref]
            if shopper.user_index is not None:
                user_pk = user_pks[shopper.user_index]
                email = f"demo_user_{first_user + shopper.user_index + 1}@example.com"
            else:
                user_pk, email = None, f"guest-{shopper.visitor_id[:8]}@example.com"
            name = f"{FIRST_NAMES[rng.integers(len(FIRST_NAMES))]} {LAST_NAMES[rng.integers(len(LAST_NAMES))]}"
            order_rows.append(
                Order(
                    user_id=user_pk,
                    email=email,
                    full_name=name,
                    address=f"{rng.integers(1, 200)} {STREETS[rng.integers(len(STREETS))]} Street, "
                    f"{CITIES[rng.integers(len(CITIES))]}",
                    created_at=self.at(min(t, self.period)),
                    total=sum((cat.prices[p] * q for p, q in cart), Decimal("0")),
                )
            )
        order_pks = [o.pk for o in Order.objects.bulk_create(order_rows, batch_size=WRITE_BATCH)]
        OrderLine.objects.bulk_create(
            [
                OrderLine(order_id=order_pks[o], product_id=cat.pks[p], quantity=q, unit_price=cat.prices[p])
                for o, (_ref, _t, cart) in enumerate(orders)
                for p, q in cart
            ],
            batch_size=WRITE_BATCH,
        )
        Favorite.objects.bulk_create(
            [
                Favorite(user_id=user_pks[shoppers[ref].user_index], product_id=cat.pks[p])
                for ref, p in sorted(favorites)
            ],
            batch_size=WRITE_BATCH,
            ignore_conflicts=True,
        )
        writer = EventWriter(EVENT_BATCH)
        for event_type, ref, p, quantity, value, query, t, order_index, context in events:
            shopper = shoppers[ref]
            moment = self.at(min(t, self.period))  # the rare very long session ends at "now", not after
            placement = rec_id = ""
            if order_index >= 0:
                context = {"order_id": order_pks[order_index]}
            if event_type in ("impression", "click") and context:
                context = dict(context)
                placement, rec_id = context.pop("placement"), context.pop("rec")
                if "items" in context:
                    context["items"] = [str(cat.pks[item]) for item in context["items"]]
            elif event_type in ATTRIBUTED and p >= 0:
                clicked = self.block_click(ref, p, t)
                if clicked is not None:
                    placement, rec_id = clicked
                    context = {**(context or {}), "attributed": "click"}
            event = build_event(
                event_type,
                user_id=str(user_pks[shopper.user_index]) if shopper.user_index is not None else "",
                visitor_id=shopper.visitor_id,
                product_id=cat.pks[p] if p >= 0 else None,
                quantity=quantity,
                value=value,
                query=query,
                placement=placement,
                recommendation_id=rec_id,
                context=context,
                event_id=f"demo-{self.seed}-{self.event_counter}",
                occurred_at=moment,
                client_time=moment,
            )
            event.received_at = moment
            self.event_counter += 1
            writer.add_event(event)
            self.stats.by_type[event_type] = self.stats.by_type.get(event_type, 0) + 1
        writer.flush()
        self.stats.events += writer.inserted
        self.stats.orders += len(orders)
        self.stats.favorites += len(favorites)

    def write_sales_counts(self, cat: Catalog) -> None:
        """ProductProfile.sales_count = units bought, the same rule as precompute's update_sales_counts."""
        sold = {str(cat.pks[p]): int(units) for p, units in enumerate(self.sales) if units}
        ids = list(sold)
        for start in range(0, len(ids), WRITE_BATCH):
            chunk = ProductProfile.objects.filter(product_id__in=ids[start : start + WRITE_BATCH])
            profiles = [
                ProductProfile(pk=pk, sales_count=sold[pid]) for pk, pid in chunk.values_list("pk", "product_id")
            ]
            ProductProfile.objects.bulk_update(profiles, ["sales_count"], batch_size=WRITE_BATCH)

    def run(self) -> Stats:
        cat = self.make_catalog()
        with transaction.atomic():
            self.write_catalog(cat)
            # bulk_create sends no post_save, so the engine's profiles are brought in step here.
            catalog.sync_products()
        for first in range(0, self.n_users, USER_CHUNK):
            count = min(USER_CHUNK, self.n_users - first)
            self.simulate_chunk(cat, first, count)
            if self.progress is not None:
                self.progress(count)
        self.write_sales_counts(cat)
        return self.stats


def _shop_price(amount: float) -> Decimal:
    """Prices end the way shops end them: .99 above 10, .49/.99 below."""
    if amount >= 10:
        return Decimal(max(round(amount), 10)) - Decimal("0.01")
    return (Decimal(max(round(amount * 2), 1)) / 2 - Decimal("0.01")).quantize(Decimal("0.01"))


def _unique_slug(name: str, taken: set[str]) -> str:
    base = slugify(name)[:200] or "product"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def generate(
    *, users: int, products: int, days: int, seed: int, now: datetime, progress: Callable[[int], None] | None = None
) -> Stats:
    """Write a synthetic shop of this size into an empty catalog; returns what was written."""
    return DemoShopGenerator(users=users, products=products, days=days, seed=seed, now=now, progress=progress).run()
