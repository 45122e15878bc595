"""The rest of the loop in the host: events imported with UUID product ids, training (web-only: the numpy
candidates, saying TensorFlow is absent), precompute, then the host's pages and the API carry blocks of its products."""

from __future__ import annotations

import re
import uuid

import pytest
from catalog.models import Product
from conftest import HAS_TENSORFLOW, SHOPPERS
from django.contrib.auth import get_user_model
from django.test import Client

from recommendations.lists.store import stored_lists
from recommendations.models import Event, RecommendationSet, TrainingRun

pytestmark = pytest.mark.django_db

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _blocks(html: str) -> dict[str, str]:
    """Each rendered block's markup by placement."""
    return dict(re.findall(r'<section class="rec-block" data-rec-placement="(\w+)".*?>(.*?)</section>', html, re.S))


def _linked_products(block: str) -> list[uuid.UUID]:
    """The products a block links to through the host's own product URLs, checked against each item's id."""
    items = re.findall(rf'data-rec-product="({UUID})".*?href="/products/({UUID})/"', block, re.S)
    assert items, block
    for product_id, linked in items:
        assert product_id == linked, block
    return [uuid.UUID(product_id) for product_id, _ in items]


def test_events_with_uuid_product_ids_are_imported(shop) -> None:
    output = shop.outputs["import"]
    imported = Event.objects.count()
    assert imported > SHOPPERS * 10
    assert f"Imported {imported} events" in output, output
    known = {str(p.pk) for p in shop.products}
    assert set(Event.objects.values_list("product_id", flat=True)) <= known


def test_training_without_tensorflow_falls_back_to_numpy_and_a_model_serves(shop) -> None:
    output = shop.outputs["train"]
    run = TrainingRun.objects.get(is_serving=True)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    assert run.chosen and "neural" not in run.chosen, run.chosen
    if not HAS_TENSORFLOW:
        assert "TensorFlow is not installed" in output, output
        assert "numpy" in output, output
        assert "neural" in run.candidates and not run.candidates["neural"].get("validation"), run.candidates


def consenting() -> Client:
    """A browser whose shopper said yes in this shop's consent manager, which sets the app's `rec_consent` cookie
    (the other tests' plain `Client()` has not: it gets shared lists only, and nothing is recorded)."""
    client = Client()
    client.cookies["rec_consent"] = "granted"
    return client


def test_precompute_stored_lists_from_the_serving_model(shop) -> None:
    assert RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE).count() == 1, shop.outputs
    shopper = get_user_model().objects.get(pk=int(shop.shopper_ids[0]))
    client = consenting()
    client.force_login(shopper)
    response = client.get("/api/recommendations/for_you/")
    assert response.status_code == 200, response.content
    block = response.json()
    assert block["source"] == "stored", block
    assert block["items"], block


def test_the_product_page_renders_similar_products_with_the_hosts_urls(shop) -> None:
    product = shop.most_viewed
    response = Client().get(f"/products/{product.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    blocks = _blocks(html)
    assert "similar" in blocks, html
    similar = _linked_products(blocks["similar"])
    assert product.pk not in similar
    assert Product.objects.filter(pk__in=similar).count() == len(set(similar))


def test_the_product_page_renders_what_was_bought_with_it(shop) -> None:
    product, partners = shop.bought_together
    response = Client().get(f"/products/{product.pk}/")
    blocks = _blocks(response.content.decode())
    assert "bought_together" in blocks, shop.outputs["precompute"]
    assert set(_linked_products(blocks["bought_together"])) == {partner.pk for partner in partners}


def test_an_out_of_stock_product_is_left_out_of_the_blocks_it_was_stored_in(shop) -> None:
    coffee = [p for p in shop.products[1:] if p.description == "A coffee product"]
    assert coffee[0] == shop.sold_out
    anchor = coffee[1]  # bought with the sold-out product and with coffee[2]
    stored = stored_lists("bought_together", [str(anchor.pk)])[str(anchor.pk)]
    assert str(shop.sold_out.pk) in [row[0] for row in stored]
    for placement in ("bought_together", "similar"):
        response = Client().get(f"/api/recommendations/{placement}/", {"product": str(anchor.pk), "limit": 50})
        assert response.status_code == 200, response.content
        assert str(shop.sold_out.pk) not in [item["product_id"] for item in response.json()["items"]]


def test_a_product_view_is_recorded_under_its_uuid_and_shows_in_recently_viewed(shop) -> None:
    first, second = shop.products[5], shop.products[6]
    assert Client().get(f"/products/{first.pk}/").status_code == 200  # without consent: nothing recorded
    assert not Event.objects.filter(event_type="view", product_id=str(first.pk)).exclude(visitor_id="").exists()
    client = consenting()
    assert client.get(f"/products/{first.pk}/").status_code == 200
    assert Event.objects.filter(event_type="view", product_id=str(first.pk)).exclude(visitor_id="").count() == 1
    html = client.get(f"/products/{second.pk}/").content.decode()
    blocks = _blocks(html)
    assert "recently_viewed" in blocks, html
    assert _linked_products(blocks["recently_viewed"]) == [first.pk]


def test_the_home_page_renders_blocks_of_the_hosts_products(shop) -> None:
    response = Client().get("/")
    assert response.status_code == 200
    blocks = _blocks(response.content.decode())
    assert blocks, response.content.decode()
    linked = [pid for block in blocks.values() for pid in _linked_products(block)]
    assert Product.objects.filter(pk__in=linked).count() == len(set(linked))


def test_the_api_answers_similar_products_for_a_uuid(shop) -> None:
    product = shop.most_viewed
    response = Client().get("/api/recommendations/similar/", {"product": str(product.pk)})
    assert response.status_code == 200, response.content
    block = response.json()
    assert block["placement"] == "similar"
    assert block["items"], block
    ids = [item["product_id"] for item in block["items"]]
    assert str(product.pk) not in ids
    assert Product.objects.filter(pk__in=ids).count() == len(set(ids))
    for item in block["items"]:
        assert item["url"] == f"/products/{item['product_id']}/", item


def test_the_api_refuses_an_unknown_product(shop) -> None:
    response = Client().get("/api/recommendations/similar/", {"product": str(uuid.uuid4())})
    assert response.status_code == 404, response.content
