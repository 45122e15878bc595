"""An anonymous shopper in a real browser: home, category, product, cart, and the tracker's click on a block.

What only a browser can show: the pages link up, the blocks render where shoppers look, tracker.js loads and
runs without errors, and a click on a recommendation reaches the ingest API as an Event with the block's
placement and recommendation id (sent with navigator.sendBeacon while the page unloads).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from recommendations.models import Event
from tests.e2e.store import SmallShop, visitor_id, wait_for_event

pytestmark = pytest.mark.e2e


def test_an_anonymous_shopper_browses_buys_and_clicks_a_recommendation(
    page: Page, page_errors: list[str], small_shop: SmallShop
):
    coffee = small_shop.categories[1]

    # Home: products and the "Recommended for you" block (best sellers for a newcomer), with the tracker running.
    page.goto("/")
    expect(page.locator(".card").first).to_be_visible()
    for_you = page.locator('.rec-block[data-rec-placement="for_you"]')
    expect(for_you).to_be_visible()
    expect(for_you.locator(".rec-item")).not_to_have_count(0)
    assert page.evaluate("window.__recTrackerLoaded === true")
    visitor = visitor_id(page.context)
    assert visitor

    # A category from the menu: only its products.
    page.get_by_role("navigation", name="Categories").get_by_role("link", name=coffee.name).click()
    expect(page).to_have_url(re.compile(rf"\?category={coffee.slug}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(coffee.name)
    titles = page.locator(".grid .card-title")  # the catalogue's cards (a block below uses the same card)
    expect(titles).to_have_count(len(small_shop.in_category(coffee)))
    assert set(titles.all_inner_texts()) == {p.name for p in small_shop.in_category(coffee)}

    # A product page, with its similar products.
    product = small_shop.by_name[titles.first.inner_text()]
    titles.first.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"{product.get_absolute_url()}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(product.name)
    similar = page.locator('.rec-block[data-rec-placement="similar"]')
    expect(similar.locator(".rec-item")).not_to_have_count(0)

    # Add two to the cart: the cart page lists them and the badge counts them.
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(re.compile(r"/cart/$"))
    expect(page.locator(".cart-table")).to_contain_text(product.name)
    expect(page.locator(".cart-count")).to_have_text("2")
    assert Event.objects.filter(event_type="add_to_cart", visitor_id=visitor, product_id=str(product.pk)).exists()

    # Back on the product page, follow a similar product: the tracker reports the click for this block.
    page.goto(product.get_absolute_url())
    block = page.locator('.rec-block[data-rec-placement="similar"]')
    item = block.locator(".rec-item").first
    placement, rec_id = block.get_attribute("data-rec-placement"), block.get_attribute("data-rec-id")
    clicked = item.get_attribute("data-rec-product")
    assert rec_id and clicked
    item.locator(".card-title a").click()  # the shop's own card: any link in an item counts
    expect(page).to_have_url(re.compile(rf"{small_shop.by_id(clicked).get_absolute_url()}$"))
    click = wait_for_event(page, event_type="click", placement=placement, recommendation_id=rec_id, product_id=clicked)
    assert click.visitor_id == visitor
    assert click.context.get("rank") == 1

    assert page_errors == []
