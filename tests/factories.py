"""Small factories for the suite: real rows, sensible defaults, every field overridable."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model

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


def make_user(username: str | None = None, password: str = "correct-horse-battery", **kw: Any) -> Any:
    n = next(_seq)
    return get_user_model().objects.create_user(username=username or f"shopper{n}", password=password, **kw)
