"""Our app in an Oscar 4.2 shop, from the catalogue to the blocks on Oscar's pages.

The shop (tests/hosts/oscar/oscar_host) is Oscar's "build your own shop" plus the steps of docs/oscar.md; its
catalogue has parents with variants, products in two categories and sold-out stock records (build_oscar_shop).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from oscar.core.loading import get_model

from recommendations.models import Event, ProductProfile, StoredList

Product = get_model("catalogue", "Product")
StockRecord = get_model("partner", "StockRecord")

pytestmark = pytest.mark.django_db

PRODUCT_LINK = re.compile(r'href="/catalogue/[\w-]+_(\d+)/"')


def block(html: str, placement: str) -> str:
    """The markup of one of our blocks on a page ("" when the page has none)."""
    match = re.search(rf'<section class="rec-block" data-rec-placement="{placement}".*?</section>', html, re.S)
    return match.group(0) if match else ""


def recorded(event_type: str) -> Any:
    """Events recorded by the shop's pages and signals (the imported history's shoppers are "shopper-<n>")."""
    return Event.objects.filter(event_type=event_type).exclude(user_id__startswith="shopper-")


def profile(upc: str) -> ProductProfile:
    return ProductProfile.objects.get(product_id=str(Product.objects.get(upc=upc).pk))


def test_the_shop_passes_the_system_checks() -> None:
    call_command("check", fail_level="WARNING")


def test_sync_makes_one_profile_per_parent_or_standalone_product(pipeline: dict[str, Any]) -> None:
    parents = Product.objects.exclude(structure="child")
    assert Product.objects.filter(structure="child").count() > 100  # the variants are there, and left out
    assert parents.count() == 300
    assert "Synced 300 product profiles" in pipeline["sync"]
    assert set(ProductProfile.objects.values_list("product_id", flat=True)) == {
        str(pk) for pk in parents.values_list("pk", flat=True)
    }


def test_a_product_in_two_categories_keeps_both_the_deepest_first(pipeline: dict[str, Any]) -> None:
    two = profile("HOST-TWOCATS")
    assert two.category == "history"  # Books > Non-fiction > History is deeper than Books > Fiction
    assert two.categories == ["history", "fiction"]
    assert (two.price, two.in_stock, two.name) == (Decimal("12.50"), True, "Two shelves")


def test_a_parent_takes_its_variants_lowest_price_and_any_stock(pipeline: dict[str, Any]) -> None:
    parent = profile("HOST-PARENT")
    assert (parent.price, parent.in_stock) == (Decimal("9.00"), True)  # 9.00 is sold out, 13.00 is not
    assert parent.brand == "Acme"  # the shop's adapter names the "brand" attribute
    assert "Acme" in parent.text and "Anchor shirt" in parent.text
    sold_out = profile("HOST-SOLDOUT")
    assert (sold_out.price, sold_out.in_stock) == (Decimal("20.00"), False)
    assert profile("BK-0000").in_stock is False  # a book whose one stock record is empty


def test_a_stock_record_change_reaches_the_parents_profile(
    pipeline: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    child = Product.objects.get(upc="HOST-SOLDOUT-L")
    record = StockRecord.objects.get(product=child)
    record.num_in_stock = 3
    record.price = Decimal("18.00")
    with django_capture_on_commit_callbacks(execute=True):
        record.save()
    sold_out = profile("HOST-SOLDOUT")
    assert (sold_out.price, sold_out.in_stock) == (Decimal("18.00"), True)


def test_import_train_and_precompute(pipeline: dict[str, Any]) -> None:
    assert f"Imported {pipeline['event_rows']} events" in pipeline["import"]
    assert re.search(r"Training run #\d+: Succeeded", pipeline["train"]), pipeline["train"]
    # The wheel was installed with the neural extra: TensorFlow fits the deep model beside the numpy ones.
    assert re.search(r"^neural\s+\d\.\d{4}", pipeline["train"], re.M), pipeline["train"]
    assert re.search(r"Precompute run #\d+ succeeded", pipeline["precompute"]), pipeline["precompute"]
    assert StoredList.objects.filter(placement="similar").count() > 200


def test_a_product_page_shows_our_blocks_with_oscar_product_links(pipeline: dict[str, Any], client: Client) -> None:
    product = Product.objects.get(upc="BK-0003")
    response = client.get(product.get_absolute_url())
    assert response.status_code == 200
    html = response.content.decode()
    similar = block(html, "similar")
    linked = {int(pk) for pk in PRODUCT_LINK.findall(similar)}
    assert len(linked) >= 3 and product.pk not in linked
    assert set(Product.objects.filter(pk__in=linked).values_list("structure", flat=True)) <= {"standalone", "parent"}
    assert 'class="product_pod"' in similar  # each item is Oscar's own product tile
    view = recorded("view").get()  # recorded through Oscar's product_viewed signal
    assert view.product_id == str(product.pk) and view.visitor_id


def test_the_home_page_shows_our_blocks(pipeline: dict[str, Any], client: Client) -> None:
    response = client.get("/", follow=True)  # Oscar's home redirects to the catalogue
    assert response.status_code == 200
    html = response.content.decode()
    for placement in ("for_you", "trending"):
        assert len(PRODUCT_LINK.findall(block(html, placement))) >= 3, placement


def test_a_variant_added_to_the_basket_is_recorded_under_its_parent(pipeline: dict[str, Any], client: Client) -> None:
    parent = Product.objects.get(upc="HOST-PARENT")
    child = Product.objects.get(upc="HOST-PARENT-M")
    response = client.post(f"/basket/add/{parent.pk}/", {"child_id": child.pk, "quantity": 2})
    assert response.status_code == 302
    added = recorded("add_to_cart").get()
    assert (added.product_id, added.quantity) == (str(parent.pk), 2)
    basket = client.get("/basket/").content.decode()
    assert 'data-rec-placement="bought_together"' in basket or 'data-rec-placement="for_you"' in basket


def test_without_consent_oscars_signals_record_nothing_and_the_blocks_are_shared_lists(
    pipeline: dict[str, Any], django_user_model: Any
) -> None:
    before = Event.objects.count()
    shopper = Client()  # has not answered the banner: the app's default records nothing
    product = Product.objects.get(upc="BK-0003")
    page = shopper.get(product.get_absolute_url())
    assert page.status_code == 200 and "data-rec-consent" in page.content.decode()
    assert len(PRODUCT_LINK.findall(block(page.content.decode(), "similar"))) >= 3
    assert "rec_vid" not in page.cookies
    assert shopper.post(f"/basket/add/{product.pk}/", {"quantity": 1}).status_code == 302
    assert shopper.get("/search/", {"q": "crime"}).status_code == 200
    user = django_user_model.objects.create_user(username="quiet", email="quiet@example.com", password="pw")
    shopper.force_login(user)
    assert shopper.get("/search/", {"q": "poetry"}).status_code == 200
    assert Event.objects.count() == before


def test_a_search_is_recorded_for_the_signed_in_shopper(
    pipeline: dict[str, Any], client: Client, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user(username="searcher", email="searcher@example.com", password="pw")
    client.force_login(user)
    assert client.get("/search/", {"q": "crime"}).status_code == 200
    search = recorded("search").get()
    assert (search.query, search.user_id) == ("crime", str(user.pk))


def test_an_order_placed_outside_a_request_is_recorded_for_its_user(
    pipeline: dict[str, Any], django_user_model: Any
) -> None:
    from oscar.apps.partner.strategy import Selector
    from oscar.test.factories import create_order

    Basket = get_model("basket", "Basket")

    user = django_user_model.objects.create_user(username="phone", email="phone@example.com", password="pw")
    product = Product.objects.get(upc="BK-0003")
    basket = Basket.objects.create(owner=user)
    basket.strategy = Selector().strategy()
    basket.add_product(product)
    order = create_order(user=user, basket=basket)  # Oscar's OrderCreator: order_placed, and no post_checkout
    purchases = list(recorded("purchase"))
    assert [(e.product_id, e.user_id, e.event_id) for e in purchases] == [
        (str(product.pk), str(user.pk), f"oscar-line-{order.lines.get().pk}")
    ]
    assert purchases[0].context == {"order_id": str(order.number)}


def test_an_order_placed_in_a_request_without_post_checkout_is_recorded_when_the_request_ends(
    pipeline: dict[str, Any],
) -> None:
    """A custom checkout that places a guest's order and sends no post_checkout: the request's visitor gets it."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections
    from oscar.apps.partner.strategy import Selector
    from oscar.test.factories import create_order

    Basket = get_model("basket", "Basket")
    visitor = "a" * 32
    product = Product.objects.get(upc="BK-0004")
    # As Django's test client does: the request's signals without closing this test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        request_started.send(sender=None, environ={"HTTP_COOKIE": f"rec_vid={visitor}; sessionid=x"})
        basket = Basket.objects.create()
        basket.strategy = Selector().strategy()
        basket.add_product(product)
        order = create_order(basket=basket)
        assert not recorded("purchase").exists()  # post_checkout may still come, with the request
        request_finished.send(sender=None)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    purchase = recorded("purchase").get()
    assert (purchase.product_id, purchase.visitor_id, purchase.user_id) == (str(product.pk), visitor, "")
    assert purchase.context == {"order_id": str(order.number)}


def test_an_anonymous_search_is_recorded_for_the_visitor_cookie(pipeline: dict[str, Any], client: Client) -> None:
    client.cookies["rec_vid"] = "b" * 32
    assert client.get("/search/", {"q": "history"}).status_code == 200
    search = recorded("search").get()
    assert (search.query, search.visitor_id, search.user_id) == ("history", "b" * 32, "")
