"""sync_products on a product with several categories and offers: one profile per product, with every category,
the lowest price and stock from any offer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal

import pytest
from conftest import HOST_DIR
from django.db import connection

from recommendations.models import ProductProfile

pytestmark = pytest.mark.django_db


def test_sync_counts_products_not_joined_rows(shop) -> None:
    assert re.search(r"\bSynced 120 product profiles\b", shop.outputs["sync"]), shop.outputs["sync"]
    assert ProductProfile.objects.count() == 120
    assert set(ProductProfile.objects.values_list("product_id", flat=True)) == {str(p.pk) for p in shop.products}


def test_a_product_in_tea_and_coffee_keeps_both_the_lowest_price_and_its_stock(shop) -> None:
    profile = ProductProfile.objects.get(product_id=str(shop.sampler.pk))
    assert set(profile.categories) == {"tea", "coffee"}
    assert profile.category in {"tea", "coffee"}
    assert profile.categories[0] == profile.category
    assert profile.price == Decimal("9.00")
    assert profile.in_stock is True
    assert profile.name == "Tea and coffee sampler"


def test_a_product_whose_offers_have_no_stock_is_out_of_stock(shop) -> None:
    profile = ProductProfile.objects.get(product_id=str(shop.sold_out.pk))
    assert profile.in_stock is False
    assert profile.price == min(offer.price for offer in shop.sold_out.offers.all())
    assert profile.categories == [profile.category]


def test_sync_refuses_a_string_lookup_across_the_many_to_many_naming_the_field(shop) -> None:
    """The issue's wrong-features case run as the command: it writes nothing and says which key to fix."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DATABASE_URL=url,
        PYTHONPATH=os.pathsep.join(p for p in (str(HOST_DIR), env.get("PYTHONPATH", "")) if p),
    )
    before = list(ProductProfile.objects.order_by("product_id").values_list("product_id", "category", "categories"))
    synced = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "sync_products",
            "--no-progress",
            "--settings=offers_site.settings_wrong_features",
        ],
        cwd=HOST_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert synced.returncode != 0, synced.stdout + synced.stderr
    assert "categories__slug" in synced.stderr and "category" in synced.stderr, synced.stderr
    assert "Synced" not in synced.stdout, synced.stdout
    after = list(ProductProfile.objects.order_by("product_id").values_list("product_id", "category", "categories"))
    assert after == before
