"""A shopper in Chromium against the Oscar shop: sign in, view a product, add it to the basket, check out with Oscar's
default checkout. Oscar's own signals must have recorded the view, the basket addition and the order as our events,
and the home page's blocks must follow.

Debian's Chromium (/usr/bin/chromium, or $CHROMIUM_PATH), never a downloaded browser; skipped where it is missing
unless REQUIRE_CHROMIUM=1 (CI), where that fails instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from oscar.core.loading import get_model

from recommendations.models import Event

Product = get_model("catalogue", "Product")

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not Path(path).exists():
        message = f"Chromium is not at {path} (apt-get install chromium, or set CHROMIUM_PATH)"
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def page(live_server: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    # Playwright's sync API runs an event loop in this thread; our ORM calls here are plain blocking calls.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    manager = sync_playwright().start()
    try:
        browser = manager.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()
        context.close()
        browser.close()
    finally:
        # While Playwright runs, this thread's ORM calls got a connection of their own; close it, or dropping the
        # test database at the end finds it still open.
        connections.close_all()
        manager.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def block_products(page: Any, placement: str) -> list[str]:
    """The product ids of one of our blocks on the current page, in order ([] when it is not there)."""
    return page.locator(f'[data-rec-placement="{placement}"] [data-rec-product]').evaluate_all(
        "items => items.map(item => item.dataset.recProduct)"
    )


def test_view_basket_and_order_are_recorded_through_oscars_signals(
    pipeline: dict[str, Any], page: Any, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user(username="ada", email="ada@example.com", password="a-long-pass-42")
    product = Product.objects.get(upc="BK-0003")

    page.goto("/accounts/login/")
    page.get_by_role("button", name="Yes, personalise").click()  # the consent banner, on every storefront page
    page.wait_for_url(re.compile(r"/accounts/login/"))
    page.fill("#id_login-username", "ada@example.com")
    page.fill("#id_login-password", "a-long-pass-42")
    page.click("button[name=login_submit]")
    page.wait_for_url(re.compile(r"/accounts/"))

    page.goto("/catalogue/")
    assert block_products(page, "for_you")  # best sellers for a shopper with no history yet
    assert block_products(page, "recently_viewed") == []

    page.goto(product.get_absolute_url())
    assert block_products(page, "similar")
    page.click("#add_to_basket_form button[type=submit]")
    page.wait_for_load_state()

    page.goto("/basket/")
    page.click("text=Proceed to checkout")
    page.wait_for_url(re.compile(r"/checkout/shipping-address/"))
    page.fill("#id_first_name", "Ada")
    page.fill("#id_last_name", "Lovelace")
    page.fill("#id_line1", "12 St James's Square")
    page.fill("#id_line4", "London")
    page.fill("#id_postcode", "SW1Y 4JH")
    page.click("#new_shipping_address button[type=submit]")
    page.wait_for_url(re.compile(r"/checkout/payment-details/"))  # free shipping is the only method: skipped
    page.click("#view_preview")
    page.wait_for_url(re.compile(r"/checkout/preview/"))
    page.click("#place_order_form button[type=submit]")
    page.wait_for_url(re.compile(r"/checkout/thank-you/"))

    mine = Event.objects.filter(user_id=str(user.pk))
    assert set(mine.filter(event_type="view").values_list("product_id", flat=True)) == {str(product.pk)}
    assert list(mine.filter(event_type="add_to_cart").values_list("product_id", "quantity")) == [(str(product.pk), 1)]
    purchase = mine.get(event_type="purchase")
    assert (purchase.product_id, purchase.quantity) == (str(product.pk), 1)
    assert purchase.event_id.startswith("oscar-line-") and purchase.context["order_id"]
    assert purchase.visitor_id  # recorded from post_checkout, with the request and its visitor cookie

    page.goto("/catalogue/")
    assert block_products(page, "recently_viewed") == [str(product.pk)]
    assert str(product.pk) not in block_products(page, "for_you")  # bought: not recommended again
