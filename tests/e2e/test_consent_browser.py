"""Consent in the demo, in a real browser, with the app's shipped default (nobody is tracked before agreeing).

A new browser that does not answer the banner browses, adds to the cart and searches: no event is stored, no visitor
cookie is set, and the pages still show trending and similar blocks. Saying yes in the banner starts tracking at
once; a signed-in shopper turning "Personalised recommendations" off on the account page stops it again.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from recommendations.models import ConsentChoice, Event
from tests.e2e.browser import VIEWPORT
from tests.e2e.store import SmallShop
from tests.factories import make_user

pytestmark = pytest.mark.e2e

VISITOR = "rec_vid"


@pytest.fixture(autouse=True)
def _opt_in(settings: Any) -> None:
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "CONSENT_REQUIRED": True}


@pytest.fixture
def fresh(browser: Browser, live_server: Any, page_errors: list[str]) -> Page:
    """A browser that has never answered the banner (the suite's `page` has said yes)."""
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    yield page
    context.close()


def cookie_names(page: Page) -> set[str]:
    return {c["name"] for c in page.context.cookies()}


def block(page: Page, placement: str) -> Any:
    return page.locator(f'.rec-block[data-rec-placement="{placement}"]')


def test_without_consent_a_browser_session_stores_nothing_gets_no_cookie_and_still_sees_shared_blocks(
    fresh: Page, page_errors: list[str], small_shop: SmallShop
):
    page = fresh
    before = Event.objects.count()
    page.goto("/")
    expect(page.locator("[data-rec-consent]")).to_be_visible()
    expect(block(page, "trending").locator(".rec-item")).not_to_have_count(0)

    product = small_shop.products[0]
    page.goto(product.get_absolute_url())
    expect(block(page, "similar").locator(".rec-item")).not_to_have_count(0)
    page.locator(".rec-block .rec-item a[href]").first.click()  # a click on a recommendation: the tracker's turn
    page.wait_for_load_state()
    page.goto(product.get_absolute_url())
    page.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(re.compile(r"/cart/$"))
    page.goto("/products/?q=" + product.name.split()[0])
    page.goto("/")

    assert Event.objects.count() == before
    assert VISITOR not in cookie_names(page)
    assert page_errors == []

    # Yes in the banner: the banner goes, the visitor cookie comes, and the next view is stored.
    page.locator("[data-rec-consent]").get_by_role("button", name="Yes, personalise").click()
    expect(page.locator("[data-rec-consent]")).to_have_count(0)
    assert VISITOR in cookie_names(page)
    page.goto(product.get_absolute_url())
    visitor = next(c["value"] for c in page.context.cookies() if c["name"] == VISITOR)
    assert Event.objects.filter(visitor_id=visitor, event_type="view", product_id=str(product.pk)).exists()


def test_turning_personalisation_off_on_the_account_page_stops_tracking(
    page: Page, page_errors: list[str], small_shop: SmallShop
):
    user = make_user("switcher", password="pw-switcher-123")
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("switcher")
    page.get_by_label("Password").fill("pw-switcher-123")
    page.get_by_role("button", name="Log in").click()
    page.goto("/account/")
    switch = page.locator("[data-rec-consent-switch]")
    expect(switch).to_have_attribute("data-personalised", "1")
    switch.get_by_role("button", name="Turn off").click()
    expect(page.locator("[data-rec-consent-switch]")).to_have_attribute("data-personalised", "0")
    assert ConsentChoice.objects.get().personalised is False
    assert VISITOR not in cookie_names(page)

    before = Event.objects.count()
    page.goto(small_shop.products[1].get_absolute_url())
    expect(block(page, "similar").locator(".rec-item")).not_to_have_count(0)
    assert Event.objects.count() == before
    assert not Event.objects.filter(user_id=str(user.pk), product_id=str(small_shop.products[1].pk)).exists()
    assert page_errors == []
