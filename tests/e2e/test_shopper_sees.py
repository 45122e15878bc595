"""What a shopper sees in the blocks (issue 17, items 11 to 13), in a real browser.

- "Frequently bought together" on a product page and on the cart shows co-purchases only, or is not there.
- A new visitor's home page shows no reason (no shared list) under two block titles.
- A recommendation is the shop's catalogue card: the same markup, and the same width in a block of three as in the
  catalogue grid (a short block does not stretch its cards).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.store import SECOND_PARTNER, JourneyShop, SmallShop, build_journey_shop

pytestmark = pytest.mark.e2e


@pytest.fixture
def journey_shop(live_server) -> JourneyShop:
    return build_journey_shop()


def block(page: Page, placement: str) -> Locator:
    return page.locator(f'.rec-block[data-rec-placement="{placement}"]')


def reasons(rec_block: Locator) -> list[str]:
    return [text.strip() for text in rec_block.locator(".rec-reason").all_inner_texts()]


def test_bought_together_shows_only_co_purchases_on_a_product_page_and_the_cart_or_is_absent(
    page: Page, page_errors: list[str], journey_shop: JourneyShop
):
    beans = journey_shop.repeat
    expected = {str(journey_shop.partner.pk), str(journey_shop.by_name[SECOND_PARTNER].pk)}

    page.goto(beans.get_absolute_url())
    together = block(page, "bought_together")
    expect(together.locator(".rec-title")).to_have_text("Frequently bought together")
    shown = set(together.locator(".rec-item").evaluate_all("items => items.map(i => i.dataset.recProduct)"))
    assert shown == expected
    assert reasons(together) == [f"Bought together with {beans.name}"] * 2

    page.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(re.compile(r"/cart/$"))
    together = block(page, "bought_together")
    expect(together.locator(".rec-item")).to_have_count(2)
    assert reasons(together) == [f"Bought together with {beans.name}"] * 2

    # A product nobody bought with anything: no block rather than fillers under a co-purchase title.
    tent = journey_shop.by_name["Two-person Tent"]
    page.goto(tent.get_absolute_url())
    expect(page.get_by_role("heading", level=1)).to_have_text(tent.name)
    expect(block(page, "similar").locator(".rec-item")).not_to_have_count(0)
    expect(block(page, "bought_together")).to_have_count(0)
    page.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(re.compile(r"/cart/$"))
    expect(page.locator(".cart-table")).to_contain_text(tent.name)
    assert reasons(block(page, "bought_together")) == [f"Bought together with {beans.name}"] * 2, "the beans' only"
    page.locator(".cart-table tr", has_text=beans.name).get_by_role("button", name="Remove").click()
    expect(page.locator(".cart-table")).not_to_contain_text(beans.name)
    expect(block(page, "bought_together")).to_have_count(0)
    assert page_errors == []


def test_a_new_visitors_home_shows_no_reason_under_two_block_titles(page: Page, small_shop: SmallShop):
    page.goto("/")
    blocks = page.locator(".rec-block")
    expect(block(page, "for_you").locator(".rec-item")).not_to_have_count(0)
    expect(block(page, "trending").locator(".rec-item")).not_to_have_count(0)
    titles_of: dict[str, set[str]] = {}
    for i in range(blocks.count()):
        rec_block = blocks.nth(i)
        title = rec_block.locator(".rec-title").inner_text().strip()
        for reason in reasons(rec_block):
            titles_of.setdefault(reason, set()).add(title)
    assert titles_of, "the blocks give reasons"
    assert {reason: titles for reason, titles in titles_of.items() if len(titles) > 1} == {}
    assert "Trending now" not in reasons(block(page, "for_you"))


CARD_SHAPE = """card => [...card.querySelectorAll('*')].map(e => e.tagName + '.' + [...e.classList].sort().join('.'))
    .filter(s => !s.includes('card-reason'))"""


def test_a_recommendation_is_the_catalogue_card_and_a_short_block_does_not_stretch_it(
    page: Page, small_shop: SmallShop
):
    viewed = small_shop.products[:3]
    for product in viewed:
        page.goto(product.get_absolute_url())
    page.goto("/")
    recent = block(page, "recently_viewed")
    expect(recent.locator(".rec-item")).to_have_count(3)
    rec_cards = recent.locator(".rec-item > .card")
    expect(rec_cards).to_have_count(3)
    catalogue_card = page.locator(".grid > .card").first

    assert rec_cards.first.evaluate(CARD_SHAPE) == catalogue_card.evaluate(CARD_SHAPE)
    expect(rec_cards.first.locator(".card-title")).to_have_text(viewed[-1].name)
    expect(rec_cards.first.locator(".rec-reason")).to_have_text("You viewed this")

    catalogue_width = catalogue_card.bounding_box()["width"]
    widths = [rec_cards.nth(i).bounding_box()["width"] for i in range(3)]
    assert all(abs(width - catalogue_width) <= 1 for width in widths), (widths, catalogue_width)
    section_width = recent.bounding_box()["width"]
    assert sum(widths) < 0.75 * section_width, "three cards keep their width and leave the rest of the row empty"
