"""A shopper's whole visit in a real browser: every recommendation surface reacting to what they do.

Arrive anonymous, browse a category nobody browsed lately and see "Recommended for you" turn to it on the next
page; log in (a shopper with past orders), put the coffee beans they keep re-buying in the cart and see the grinder
others buy with them; follow that recommendation, buy it, and find the beans under "Buy it again". The click
and the attributed add-to-cart and purchase are then counted where staff look: the Event admin, filtered by the
block's recommendation id.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from recommendations.models import Event
from tests.e2e.browser import VIEWPORT
from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.store import JourneyShop, build_journey_shop, visitor_id, wait_for_event

pytestmark = pytest.mark.e2e


@pytest.fixture
def journey_shop(live_server) -> JourneyShop:
    """Five categories, browsing, past orders and a precompute (see tests/e2e/store.py)."""
    return build_journey_shop()


def block(page: Page, placement: str) -> Locator:
    return page.locator(f'.rec-block[data-rec-placement="{placement}"]')


def shown(page: Page, placement: str) -> tuple[str, list[str], list[str]]:
    """The block's recommendation id, its product ids in rank order, and their reasons."""
    rec_block = block(page, placement)
    expect(rec_block.locator(".rec-item")).not_to_have_count(0)
    items = rec_block.locator(".rec-item")
    products, reasons = [], []
    for i in range(items.count()):
        item = items.nth(i)
        products.append(item.get_attribute("data-rec-product") or "")
        reason = item.locator(".rec-reason")
        reasons.append(reason.inner_text() if reason.count() else "")
    return rec_block.get_attribute("data-rec-id") or "", products, reasons


def served_impression(rec_id: str, page: Page) -> Event:
    """The server's impression row of a block (one per block, no product; written once the response has gone)."""
    return wait_for_event(page, event_type="impression", recommendation_id=rec_id, product_id="")


def test_a_shopper_browses_logs_in_buys_a_recommendation_and_staff_see_it_counted(
    page: Page, page_errors: list[str], journey_shop: JourneyShop, browser: Browser, live_server
):
    shop = journey_shop
    quiet_ids = {str(p.pk) for p in shop.in_category(shop.quiet)}
    beans, grinder = shop.repeat, shop.partner

    # Anonymous on the home page: "Recommended for you" is the shop's best sellers (trending has its own block).
    page.goto("/")
    anonymous_for_you, before, before_reasons = shown(page, "for_you")
    assert set(before_reasons) == {"Popular"}, before_reasons
    visitor = visitor_id(page.context)

    # Browse the quiet category from the menu and look at two of its products.
    categories = page.get_by_role("navigation", name="Categories")
    viewed = []
    for position in (0, 1):
        categories.get_by_role("link", name=shop.quiet.name).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(shop.quiet.name)
        card = page.locator(".grid .card-title").nth(position)
        viewed.append(shop.by_name[card.inner_text()])
        card.get_by_role("link").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(viewed[-1].name)

    # Back home, the very next page: the block leads with the rest of that category, because of those views.
    page.locator("a.brand").click()
    session_for_you, after, reasons = shown(page, "for_you")
    rest = quiet_ids - {str(p.pk) for p in viewed}
    assert set(before[: len(rest)]) != rest, "it did not lead with them before those views"
    assert set(after[: len(rest)]) == rest, f"for_you should lead with {rest}, got {after}"
    because = {f"Because you looked at {p.name}" for p in viewed}
    assert set(reasons[: len(rest)]) <= because, reasons

    # Log in from the header: the registered shopper with past orders, back on the home page.
    page.get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill(shop.shopper.username)
    page.get_by_label("Password").fill(shop.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("navigation", name="Account")).to_contain_text(shop.shopper.username)

    # The beans' page recommends the grinder bought with them, and has a "Frequently bought together" block.
    categories.get_by_role("link", name=beans.category.name).click()
    page.locator(".grid .card-title").get_by_role("link", name=beans.name).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(beans.name)
    expect(block(page, "similar").locator(".rec-item")).not_to_have_count(0)
    expect(block(page, "bought_together").locator(".rec-item")).not_to_have_count(0)
    expect(page.locator(f'.rec-item[data-rec-product="{grinder.pk}"]')).to_have_count(1)

    # Beans in the cart: the cart's "Frequently bought together" offers the grinder, for the beans.
    page.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(re.compile(r"/cart/$"))
    cart_block_id, offered, offered_reasons = shown(page, "bought_together")
    assert offered[0] == str(grinder.pk), offered
    assert offered_reasons[0] == f"Bought together with {beans.name}"

    # Follow it: the tracker reports the click for this block.
    block(page, "bought_together").locator(f'.rec-item[data-rec-product="{grinder.pk}"] .card-title a').click()
    expect(page.get_by_role("heading", level=1)).to_have_text(grinder.name)
    click = wait_for_event(
        page,
        event_type="click",
        placement="bought_together",
        recommendation_id=cart_block_id,
        product_id=str(grinder.pk),
    )
    assert click.user_id == str(shop.shopper.pk) and click.visitor_id == visitor
    assert click.context.get("rank") == 1

    # Buy both: the grinder to the cart, then checkout with the delivery details.
    page.get_by_role("button", name="Add to cart").click()
    expect(page.locator(".cart-count")).to_have_text("2")
    page.get_by_role("link", name="Go to checkout").click()
    expect(page.get_by_label("Email")).to_have_value(shop.shopper.email)
    page.get_by_label("Full name").fill("Sam Shopper")
    page.get_by_label("Delivery address").fill("1 Harbour Lane\nPortsmouth")
    page.get_by_role("button", name=re.compile(r"^Place order")).click()
    expect(page.locator(".messages")).to_contain_text("has been placed")
    order_id = int(re.search(r"/orders/(\d+)/$", page.url).group(1))

    # The account page: the new order with the old ones, the beans under "Buy it again", and "for you".
    page.get_by_role("navigation", name="Account").get_by_role("link", name=shop.shopper.username).click()
    expect(page.get_by_role("link", name=f"#{order_id}")).to_be_visible()
    buy_again_id, again, again_reasons = shown(page, "buy_again")
    assert again[0] == str(beans.pk), again
    assert again_reasons[0] == "You bought this before"
    expect(block(page, "for_you").locator(".rec-item")).not_to_have_count(0)

    # In the database: the add to cart and the purchase of the grinder carry the click's block; the beans'
    # purchase in the same order had no click and carries none.
    shopper = f"u:{shop.shopper.pk}"
    for event_type in ("add_to_cart", "purchase"):
        grinder_event = Event.objects.get(shopper=shopper, event_type=event_type, product_id=str(grinder.pk))
        assert (grinder_event.placement, grinder_event.recommendation_id) == ("bought_together", cart_block_id)
        assert grinder_event.context.get("attributed") == "click"
    purchase = Event.objects.get(shopper=shopper, event_type="purchase", product_id=str(grinder.pk))
    assert purchase.context.get("order_id") == order_id
    beans_purchase = Event.objects.get(
        shopper=shopper, event_type="purchase", context__order_id=order_id, product_id=str(beans.pk)
    )
    assert beans_purchase.recommendation_id == "" and beans_purchase.placement == ""

    # ... and every block seen was counted as served, with the products it showed.
    for rec_id, products in (
        (anonymous_for_you, before),
        (session_for_you, after),
        (cart_block_id, offered),
        (buy_again_id, again),
    ):
        assert served_impression(rec_id, page).context["items"] == products
    assert page_errors == []

    # Staff, in a browser of their own, find the block's click, add to cart and purchase in the Event admin.
    staff = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    staff.set_default_timeout(TIMEOUT_MS)
    try:
        admin = staff.new_page()
        admin.goto(f"/admin/recommendations/event/?recommendation_id={cart_block_id}")
        admin.get_by_label("Username").fill(shop.staff.username)
        admin.get_by_label("Password").fill(shop.staff_password)
        admin.get_by_role("button", name="Log in").click()
        rows = admin.locator("#result_list tbody tr")
        expect(rows.filter(has_text="Recommendation click")).to_have_count(1)
        expect(rows.filter(has_text="Add to cart")).to_have_count(1)
        expect(rows.filter(has_text="Purchase")).to_have_count(1)
        admin.locator("#changelist-filter").get_by_role("link", name="Purchase").click()
        expect(admin).to_have_url(re.compile(rf"recommendation_id={cart_block_id}"))
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("bought_together")
        expect(rows.first).to_contain_text(str(grinder.pk))
    finally:
        staff.close()


def test_the_product_page_shows_what_is_bought_together_under_frequently_bought_together(
    page: Page, journey_shop: JourneyShop
):
    page.goto(journey_shop.repeat.get_absolute_url())
    _, together, reasons = shown(page, "bought_together")
    assert together[0] == str(journey_shop.partner.pk), together
    assert reasons[0] == f"Bought together with {journey_shop.repeat.name}"
