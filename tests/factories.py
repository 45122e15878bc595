"""Small factories for the suite: real rows, sensible defaults, every field overridable."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model

from recommendations.engine.base import EVENT_TYPE_CODES, Interactions, ItemFeatures
from recommendations.models import Event, ProductProfile
from recommendations.tracking import attribute, build_event
from shop.models import Brand, Category, Product

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
