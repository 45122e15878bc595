"""Small factories for the suite: real rows, sensible defaults, every field overridable.

Also the few helpers more than one test module needs (a logged-in staff member, the stored lists serving reads, a
rendered block's products), so each lives here once instead of being copied between modules.
"""

from __future__ import annotations

import itertools
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connections
from django.template import Context, Template
from django.test import Client
from django.utils import timezone

from recommendations import catalog, serving
from recommendations.engine.base import EVENT_TYPE_CODES, Interactions, ItemFeatures
from recommendations.lists.precompute import run_precompute
from recommendations.models import Event, ProductProfile, RecommendationSet, StoredList, TrainingRun
from recommendations.tracking import attribute, build_event, store_events
from recommendations.training import runs as training
from shop.models import Brand, Category, Product
from tests.engine.synthetic import make_shop

_seq = itertools.count(1)


def make_category(name: str | None = None, **kw: Any) -> Category:
    n = next(_seq)
    name = name or f"Category {n}"
    return Category.objects.create(name=name, slug=kw.pop("slug", f"category-{n}"), **kw)


def make_brand(name: str | None = None, **kw: Any) -> Brand:
    n = next(_seq)
    name = name or f"Brand {n}"
    return Brand.objects.create(name=name, slug=kw.pop("slug", f"brand-{n}"), **kw)


def make_product(name: str | None = None, **kw: Any) -> Product:
    n = next(_seq)
    if "category" not in kw:
        kw["category"] = make_category()
    kw.setdefault("price", Decimal("10.00"))
    kw.setdefault("stock", 10)
    kw.setdefault("description", f"A fine product number {n}.")
    return Product.objects.create(name=name or f"Product {n}", slug=kw.pop("slug", f"product-{n}"), **kw)


def make_event(event_type: str, shopper: str = "v:visitor", **fields: Any) -> Event:
    """A stored event as `record_event` writes it (conversions attributed to an earlier click); `shopper` is
    "u:<user id>" or "v:<visitor id>"."""
    kind, _, key = shopper.partition(":")
    who = {"user_id": key} if kind == "u" else {"visitor_id": key}
    event = build_event(event_type, **who, **fields)
    attribute([event])
    event.save(force_insert=True)
    return event


def make_user(username: str | None = None, password: str = "correct-horse-battery", **kw: Any) -> Any:
    n = next(_seq)
    return get_user_model().objects.create_user(username=username or f"shopper{n}", password=password, **kw)


T_END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TYPE_OF_CODE = {code: name for name, code in EVENT_TYPE_CODES.items()}


def write_shop(interactions: Interactions, features: ItemFeatures, end: datetime = T_END, prefix: str = "u:s") -> None:
    """Store a synthetic shop as profiles and events, the way the app would have recorded them."""
    if not ProductProfile.objects.exists():
        ProductProfile.objects.bulk_create(
            ProductProfile(
                product_id=pid,
                name=features.text[i],
                category=features.categories[features.category[i] - 1],
                brand=features.brands[features.brand[i] - 1],
                price=round(float(np.exp(features.price_z[i] + 3)), 2),
                text=features.text[i],
                created_at=end - timedelta(days=float(features.age_days[i])),
            )
            for i, pid in enumerate(features.item_ids)
        )
    Event.objects.bulk_create(
        Event(
            event_id=uuid.uuid4().hex,
            event_type=TYPE_OF_CODE[int(code)],
            user_id=f"{prefix}{shopper}",
            shopper=f"u:{prefix}{shopper}",
            product_id=features.item_ids[item],
            occurred_at=end - timedelta(days=float(age)),
        )
        for shopper, item, code, age in zip(
            interactions.shopper, interactions.item, interactions.event_type, interactions.age_days, strict=True
        )
    )


def write_synthetic_shop() -> tuple[Interactions, ItemFeatures]:
    """The synthetic shop (200 shoppers, 80 products) the admin tests run real training on, stored as rows."""
    data, features = make_shop(n_shoppers=200, n_items=80, seed=1)
    write_shop(data, features)
    return data, features


def train_two_runs() -> tuple[TrainingRun, TrainingRun]:
    """Two real training runs; the gate makes each serve in turn, so the second serves and the first served before."""
    first = training.run_training(candidates=["popularity"])
    second = training.run_training(candidates=["item_knn"])
    return first, second


def serving_pk() -> int | None:
    """The pk of the training run whose model serves, None when none does."""
    return TrainingRun.objects.filter(is_serving=True).values_list("pk", flat=True).first()


def staff_with(client: Client, *codenames: str, apps: tuple[str, ...] = ("recommendations",)) -> tuple[Client, Any]:
    """Log `client` in as a new staff member holding only these permissions (of `apps`), to show what each allows."""
    user = make_user(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=apps, codename__in=codenames))
    client.force_login(user)
    return client, user


# -- the small hand-made shop serving and the rules admin are tested on --------------------------------------------

SMALL_SHOP = (  # name, category, brand, sales count; prices run 10, 20, ... 80 in this order
    ("Pan", "kitchen", "Acme", 50),
    ("Pot", "kitchen", "Acme", 40),
    ("Wok", "kitchen", "Acme", 30),
    ("Kettle", "kitchen", "Zen", 20),
    ("Rake", "garden", "Leaf", 45),
    ("Hoe", "garden", "Leaf", 35),
    ("Hose", "garden", "Leaf", 25),
    ("Shears", "garden", "Zen", 15),
)


def make_small_shop() -> dict[str, Product]:
    """SMALL_SHOP as products by name, profiles synced and sales counts set, so a test can name what it expects."""
    categories = {"kitchen": make_category("Kitchen", slug="kitchen"), "garden": make_category("Garden", slug="garden")}
    brands = {name: make_brand(name) for name in ("Acme", "Zen", "Leaf")}
    products = {
        name: make_product(name, category=categories[category], brand=brands[brand], price=Decimal(10 * (i + 1)))
        for i, (name, category, brand, _sold) in enumerate(SMALL_SHOP)
    }
    catalog.sync_products()
    for name, _category, _brand, sold in SMALL_SHOP:
        ProductProfile.objects.filter(product_id=str(products[name].pk)).update(sales_count=sold)
    return products


def active_lists(**by_placement: dict[str, list[tuple[Any, ...]]]) -> RecommendationSet:
    """An active set holding {placement: {subject: [(product, score, reason, ...), ...]}}, so a test states exactly
    what the engine precomputed and checks what serving makes of it."""
    new = RecommendationSet.objects.create(status=RecommendationSet.Status.ACTIVE, activated_at=timezone.now())
    for placement, subjects in by_placement.items():
        for subject, items in subjects.items():
            rows = [[str(p.pk), score, reason, *rest] for p, score, reason, *rest in items]
            StoredList.objects.create(recommendation_set=new, placement=placement, subject=subject, items=rows)
    serving.forget_active_set()
    return new


def visitor() -> str:
    """A new visitor id, so no history or cached block of another test's shopper applies."""
    return uuid.uuid4().hex


def render(source: str, request: Any = None, **context: Any) -> str:
    """A template string rendered as a page would render it (the tags read the request)."""
    return Template(source).render(Context({"request": request, **context}))


def block_html(html: str, placement: str) -> str:
    """The rendered block of one placement in a page ("" when the page has none)."""
    match = re.search(rf'<section class="rec-block" data-rec-placement="{placement}".*?</section>', html, re.S)
    return match.group(0) if match else ""


def rendered_ids(html: str) -> list[str]:
    """The product ids a rendered block shows, in order."""
    return re.findall(r'data-rec-product="([^"]+)"', html)


def serving_and_candidate_runs(n_shoppers: int, n_items: int, seed: int) -> tuple[Any, Any]:
    """Two trained runs on a synthetic shop: A (popularity) serves; B (item_knn, which scores each shopper's own
    history) does not, so B can be an experiment's model version."""
    from recommendations.training import runs as training
    from tests.engine.synthetic import make_shop

    data, features = make_shop(n_shoppers=n_shoppers, n_items=n_items, seed=seed)
    write_shop(data, features)
    b = training.run_training(candidates=["item_knn"])
    a = training.run_training(candidates=["popularity"])
    training.activate(a.pk, by="test")
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.is_serving and not b.is_serving and b.has_artefact
    return a, b


def model_version_experiment(run: Any, salt: str) -> Any:
    """A running for_you experiment: control on the serving model, treatment on `run`'s model."""
    from django.utils import timezone

    from recommendations.models import Experiment, ExperimentVariant

    running = Experiment.objects.create(
        name="B on for_you",
        placement="for_you",
        status=Experiment.Status.RUNNING,
        salt=salt,
        started_at=timezone.now() - timedelta(days=1),
    )
    ExperimentVariant.objects.create(experiment=running, name="control", share=1, strategy="model")
    ExperimentVariant.objects.create(
        experiment=running, name="treatment", share=1, strategy="model_version", training_run=run
    )
    return running


def child_database_url() -> str:
    """The test database as a URL, for a child process (a worker, a background job) that must find it."""
    db = settings.DATABASES["default"]
    auth = (db.get("USER") or "") + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def recommendations_with(**values: Any) -> dict[str, Any]:
    """The RECOMMENDATIONS setting with these keys changed, for `settings.RECOMMENDATIONS = ...`."""
    return {**settings.RECOMMENDATIONS, **values}


def closed_port() -> int:
    """A local port nobody listens on (bound, read and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def database_unreachable() -> Iterator[None]:
    """The default connection, for this block, is a real PostgreSQL connection to a port nobody listens on."""
    original = connections["default"]
    dead = original.__class__({**original.settings_dict, "HOST": "127.0.0.1", "PORT": str(closed_port())}, "default")
    connections["default"] = dead
    try:
        yield
    finally:
        dead.close()
        connections["default"] = original


def make_co_viewed_toys() -> dict[str, Any]:
    """Five shoppers co-view a kite, a yo-yo and a ball (a drum stays unseen); precomputed, so a refresh has a set
    to write into. Returns the products by name."""
    toys = make_category(slug="toys")
    products = {name: make_product(name, category=toys) for name in ("Kite", "Yo-yo", "Ball", "Drum")}
    catalog.sync_products()
    events = []
    for n in range(5):
        for name in ("Kite", "Yo-yo", "Ball"):
            events.append(build_event("view", visitor_id=f"{n:032x}", product_id=str(products[name].pk)))
    store_events(events)
    run_precompute()
    return products
