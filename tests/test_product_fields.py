"""PRODUCT_FIELDS for multi-valued product data (issue 12): aggregates, Values(...), callables and an adapter give one
profile per product with the right values, on a host whose products have UUID keys, many-to-many categories and
their price and stock on offer rows (tests.shapes); a to-many string lookup is a check error naming the fix.
"""

from __future__ import annotations

import io
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.db.models import Count, F, Max, Min, Q
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from recommendations import catalog, tracking
from recommendations.lists import store
from recommendations.lists.precompute import run_precompute
from recommendations.models import ProductProfile, StoredList
from recommendations.product_fields import ProductAdapter, Values
from tests.factories import make_product, recommendations_with
from tests.shapes.models import Category, Offer, Product

pytestmark = pytest.mark.django_db

FIELDS: dict[str, Any] = {
    "name": "title",
    "category": Values("categories__slug", pick="all"),
    "price": Min("offers__price"),
    "in_stock": Max("offers__stock"),
    "text": "blurb",
    "active": "published",
}


def shapes(fields: dict[str, Any] | None = None, **more: Any) -> Any:
    """Settings for the tests.shapes host: its product model and these PRODUCT_FIELDS."""
    return override_settings(
        RECOMMENDATIONS=recommendations_with(PRODUCT_MODEL="shapes.Product", PRODUCT_FIELDS=fields or FIELDS, **more)
    )


def category(slug: str, depth: int = 1) -> Category:
    return Category.objects.get_or_create(slug=slug, defaults={"depth": depth})[0]


def product(title: str, categories: list[str] = (), offers: list[tuple[str, int]] = (), **kw: Any) -> Product:
    """A product in these categories (by slug) with these (price, stock) offers."""
    made = Product.objects.create(title=title, **kw)
    made.categories.set([category(slug) for slug in categories])
    for price, stock in offers:
        Offer.objects.create(product=made, price=Decimal(price), stock=stock)
    return made


def profile(made: Product) -> ProductProfile:
    return ProductProfile.objects.get(product_id=str(made.pk))


def test_the_issues_case_gets_every_category_the_lowest_price_and_any_stock():
    both = product("Tea and coffee", ["tea", "coffee"], [("13.00", 0), ("9.00", 3)])
    sold_out = product("Sold out", ["tea"], [("4.00", 0), ("5.00", 0)])
    no_offer = product("No offer yet", [])
    with shapes():
        assert catalog.sync_products() == {"synced": 3, "deactivated": 0}
    got = profile(both)
    assert set(got.categories) == {"tea", "coffee"} and len(got.categories) == 2
    assert got.category == "coffee"  # the first of them, in the lookup's own order
    assert got.price == Decimal("9.00") and got.in_stock
    assert (profile(sold_out).price, profile(sold_out).in_stock) == (Decimal("4.00"), False)
    empty = profile(no_offer)
    assert (empty.category, empty.categories, empty.price, empty.in_stock) == ("", [], None, False)


def test_120_products_sync_as_120_profiles_with_one_grouped_query_per_key(monkeypatch):
    made = []
    for n in range(120):
        slugs = ["tea", "coffee", "cocoa"][: 1 + n % 3]
        made.append(product(f"P{n}", slugs, [(f"{10 + n}.00", n % 2), (f"{5 + n}.50", 0), ("99.00", 1)][: 1 + n % 3]))
    out = io.StringIO()
    with shapes(), CaptureQueriesContext(connection) as queries:
        call_command("sync_products", "--no-progress", stdout=out)
    assert "Synced 120 product profiles" in out.getvalue()
    assert ProductProfile.objects.count() == 120
    reads = [q["sql"] for q in queries.captured_queries if '"shapes_' in q["sql"] and "COUNT(*)" not in q["sql"]]
    assert len(reads) == 4, reads  # the products' own columns, then categories, price and stock for the one batch
    assert len(profile(made[2]).categories) == 3 and profile(made[2]).price == Decimal("7.50")
    assert profile(made[3]).in_stock and profile(made[3]).price == Decimal("13.00")

    ProductProfile.objects.all().delete()
    monkeypatch.setattr(catalog, "SYNC_BATCH", 50)  # batch edges: 50, 50, 20
    with shapes():
        assert catalog.sync_products()["synced"] == 120
    assert profile(made[118]).price == Decimal("123.50") and not profile(made[118]).in_stock
    assert profile(made[118]).categories == ["coffee", "tea"]
    assert profile(made[50]).categories == ["cocoa", "coffee", "tea"]


def test_a_to_many_string_lookup_is_a_check_error_naming_the_key_and_the_fix():
    product("Tea and coffee", ["tea", "coffee"], [("13.00", 0), ("9.00", 3)])
    wrong = {"name": "title", "category": "categories__slug", "price": "offers__price"}
    with shapes(wrong):
        with pytest.raises(SystemCheckError) as failed:
            call_command("check")
        with pytest.raises(CommandError) as refused:
            call_command("sync_products", "--no-progress")
    report = str(failed.value)
    assert "recommendations.E009" in report
    assert "['category'] = 'categories__slug'" in report and "to-many relation 'categories'" in report
    assert 'Values("categories__slug", pick="all")' in report
    assert "['price'] = 'offers__price'" in report and 'Min("offers__price")' in report
    assert "PRODUCT_ADAPTER" in report
    assert "categories__slug" in str(refused.value) and "\n" not in str(refused.value)
    assert not ProductProfile.objects.exists(), "nothing was written"


class NotAnAdapter:
    """A class that is not a ProductAdapter subclass."""


@pytest.mark.parametrize(
    ("fields", "adapter", "code", "words"),
    [
        ({"category": Values("categories__colour")}, None, "E010", ["'category'", "colour"]),
        ({"category": Values("categories__slug", order_by="categories__deep")}, None, "E010", ["'category'", "deep"]),
        ({"price": F("title")}, None, "E010", ["'price'", "without an aggregate"]),
        ({"brand": Values("categories__slug", pick="all")}, None, "E010", ["'brand'", 'pick="all"']),
        ({"category": Values("categories__slug", pick="any")}, None, "E010", ["'category'", "first, last, all"]),
        ({"price": Min("offers__cost")}, None, "E010", ["'price'", "cost"]),
        ({"name": 42}, None, "E010", ["'name'", "Values(...)"]),
        (
            {"category": Values("categories__slug", order_by="-offers__price")},
            None,
            "E010",
            ["'category'", "'offers'"],
        ),
        ({}, "tests.nowhere.Adapter", "E011", ["tests.nowhere.Adapter", "ProductAdapter"]),
        ({}, "tests.test_product_fields.NotAnAdapter", "E011", ["NotAnAdapter", "subclass"]),
    ],
)
def test_a_bad_spec_is_a_check_error_naming_the_key_and_the_fix(fields, adapter, code, words):
    with shapes({"name": "title", **fields}, PRODUCT_ADAPTER=adapter):
        errors = catalog.check_product_fields()
    assert [e.id for e in errors] == [f"recommendations.{code}"]
    text = f"{errors[0].msg} {errors[0].hint}"
    for word in words:
        assert word in text, text


def test_a_good_spec_passes_the_checks():
    with shapes(
        {**FIELDS, "brand": Count("offers", filter=Q(offers__stock__gt=0))},
        PRODUCT_ADAPTER="tests.test_product_fields.PublishedOnly",
    ):
        assert catalog.check_product_fields() == []
        call_command("check")


def test_callables_are_called_with_each_host_product():
    made = product("Green tea", ["tea", "drinks"], [("3.00", 1)])
    fields = {
        "name": lambda p: p.title.upper(),
        "category": lambda p: sorted(c.slug for c in p.categories.all()),
        "price": Min("offers__price"),
    }
    with shapes(fields):
        catalog.sync_products()
    got = profile(made)
    assert (got.name, got.category, got.categories, got.price) == ("GREEN TEA", "drinks", ["drinks", "tea"], 3)


class PublishedOnly(ProductAdapter):
    """Unpublished products have no profile; the brand and a member price come from code."""

    def get_queryset(self, queryset: Any) -> Any:
        return queryset.filter(published=True).prefetch_related("offers")

    def values(self, product: Any) -> dict[str, Any]:
        prices = [offer.price for offer in product.offers.all()]
        return {"brand": "House", "price": min(prices) * Decimal("0.9") if prices else None}


def test_an_adapter_overrides_values_and_chooses_the_products():
    shown = product("Shown", ["tea"], [("10.00", 1), ("20.00", 1)])
    hidden = product("Hidden", ["tea"], [("5.00", 1)], published=False)
    with shapes(PRODUCT_ADAPTER="tests.test_product_fields.PublishedOnly"):
        assert catalog.sync_products()["synced"] == 1
        out = io.StringIO()
        call_command("sync_products", "--no-progress", stdout=out)
    assert "Synced 1 product profile;" in out.getvalue()
    got = profile(shown)
    assert (got.brand, got.price, got.category) == ("House", Decimal("9.00"), "tea")
    assert not ProductProfile.objects.filter(product_id=str(hidden.pk)).exists()


def test_uuid_ids_round_trip_through_get_products():
    made = product("Kettle", ["tea"], [("30.00", 2)])
    with shapes():
        catalog.sync_products()
        found = catalog.get_products([profile(made).product_id, "not-a-uuid", "5b1f5d76-0000-0000-0000-000000000000"])
    assert list(found) == [str(made.pk)] and found[str(made.pk)].title == "Kettle"


def test_sync_product_after_a_save_rereads_the_related_rows():
    made = product("Mug", ["tea"], [("8.00", 0)])
    with shapes():
        catalog.sync_products()
        assert not profile(made).in_stock
        Offer.objects.create(product=made, price=Decimal("6.00"), stock=4)
        made.categories.add(category("gifts"))
        made.title = "Big mug"
        made.save()
        catalog.sync_product(made)  # what the post_save receiver runs on commit
    got = profile(made)
    assert (got.name, got.price, got.in_stock, set(got.categories)) == (
        "Big mug",
        Decimal("6.00"),
        True,
        {"tea", "gifts"},
    )


def test_the_deepest_category_by_order_by():
    category("drinks", 1), category("tea", 2), category("green", 3)
    made = product("Sencha", ["drinks", "tea", "green"], [("4.00", 1)])
    deepest = {"name": "title", "category": Values("categories__slug", order_by="-categories__depth")}
    shallowest = {"name": "title", "category": Values("categories__slug", pick="last", order_by="-categories__depth")}
    with shapes(deepest):
        catalog.sync_products()
    assert (profile(made).category, profile(made).categories) == ("green", ["green"])
    with shapes(shallowest):
        catalog.sync_products()
    assert profile(made).category == "drinks"


def test_text_joins_every_value():
    made = product("Sencha", ["tea", "green"])
    with shapes({"name": "title", "text": Values("categories__slug", pick="all")}):
        catalog.sync_products()
    assert profile(made).text == "green tea"


def test_plain_lookups_still_read_with_one_query():
    for name in ("Kite", "Ball", "Drum"):
        make_product(name)
    with CaptureQueriesContext(connection) as queries:
        assert catalog.sync_products()["synced"] == 3
    reads = [q["sql"] for q in queries.captured_queries if '"shop_product"' in q["sql"]]
    assert len(reads) == 1, reads
    assert ProductProfile.objects.get(name="Kite").categories == [ProductProfile.objects.get(name="Kite").category]


def test_product_fields_imports_from_a_settings_module_before_django_is_set_up():
    code = (
        "import sys, recommendations.product_fields as f; "
        "from django.apps import apps; "
        "assert not apps.ready and 'recommendations.models' not in sys.modules; "
        "print(f.Values('categories__slug', pick='all'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Values('categories__slug', pick='all')"


def test_a_product_in_two_categories_trends_in_both():
    both = product("Tea and coffee", ["tea", "coffee"], [("9.00", 3)])
    tea = product("Tea", ["tea"], [("4.00", 1)])
    coffee = product("Coffee", ["coffee"], [("5.00", 1)])
    with shapes():
        catalog.sync_products()
        events = [(f"v{n}", made) for n in range(3) for made in (both, tea, coffee)]
        tracking.store_events(
            tracking.build_event("view", visitor_id=who, product_id=str(made.pk)) for who, made in events
        )
        run_precompute()
    lists = {
        row.subject: [item[0] for item in row.items]
        for row in StoredList.objects.filter(recommendation_set__status="active", placement="trending")
    }
    assert set(lists["category:tea"]) == {str(both.pk), str(tea.pk)}
    assert set(lists["category:coffee"]) == {str(both.pk), str(coffee.pk)}


class VariantsAdapter(ProductAdapter):
    """A product whose blurb reads "variant of <id>" is a variant: no profile of its own, events under its parent."""

    def get_queryset(self, queryset: Any) -> Any:
        return queryset.exclude(blurb__startswith="variant of ")

    def product_id_for(self, product: Any) -> str:
        return product.blurb.removeprefix("variant of ") if product.blurb.startswith("variant of ") else str(product.pk)


def test_saving_a_variant_refreshes_its_parents_profile():
    parent = product("Teapot", ["tea"], [("20.00", 0)])
    variant = product("Teapot, blue", [], blurb=f"variant of {parent.pk}")
    with shapes(PRODUCT_ADAPTER="tests.test_product_fields.VariantsAdapter"):
        assert catalog.sync_products()["synced"] == 1
        assert not profile(parent).in_stock
        Offer.objects.create(product=parent, price=Decimal("18.00"), stock=2)  # the blue one arrives
        catalog.sync_product(variant)
    assert (profile(parent).price, profile(parent).in_stock) == (Decimal("18.00"), True)
    assert not ProductProfile.objects.filter(product_id=str(variant.pk)).exists()


def test_best_sellers_of_a_category_include_products_also_in_it():
    both = product("Tea and coffee", ["tea", "coffee"], [("9.00", 3)])
    coffee = product("Coffee", ["coffee"], [("5.00", 1)])
    tea = product("Tea", ["tea"], [("4.00", 1)])
    with shapes():
        catalog.sync_products()
    assert profile(both).category == "coffee"  # "tea" is only in its categories
    assert {row[0] for row in store.popular_items(10, "tea")} == {str(both.pk), str(tea.pk)}
    assert {row[0] for row in store.popular_items(10, "coffee")} == {str(both.pk), str(coffee.pk)}
