"""Staff set a cold-start rule in a real browser and a new visitor sees it on the very next page.

Staff log into the admin, fill in "anonymous visitors → hand-picked products X, Y on for_you" through the real form,
press Preview (the products listed, nothing saved), save, and a fresh anonymous browser opens the home page to find X
then Y leading "Recommended for you". The placement preview then shows the same block with the rule named as its
source. Screenshots go to the test's temporary directory on every run; with UPDATE_SCREENSHOTS=1 they replace
docs/img/admin-rule.png and docs/img/preview.png, the README's pictures of the two pages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from recommendations import serving, tracking
from recommendations.models import ColdStartRule, Event
from tests.e2e.browser import VIEWPORT
from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.store import SmallShop, visitor_id, wait_for_event
from tests.factories import make_user

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STAFF_PASSWORD = "staff-horse-battery"
RULE_NAME = "Welcome picks"


def shown_ids(block: Locator) -> list[str]:
    items = block.locator(".rec-item")
    expect(items).not_to_have_count(0)
    return [items.nth(i).get_attribute("data-rec-product") or "" for i in range(items.count())]


def screenshot(page: Page, tmp_path: Path, name: str, bottom_of: Locator) -> None:
    """The page from the top down to the bottom of `bottom_of`; kept as the README's picture on request."""
    box = bottom_of.bounding_box()
    assert box is not None
    scroll_y = page.evaluate("window.scrollY")
    height = max(VIEWPORT["height"] // 2, int(box["y"] + scroll_y + box["height"]) + 16)
    shot = tmp_path / name
    page.screenshot(path=shot, full_page=True, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img" / name).write_bytes(shot.read_bytes())


def test_staff_create_a_cold_start_rule_and_a_new_visitor_sees_it_first(
    page: Page, page_errors: list[str], small_shop: SmallShop, browser: Browser, live_server, tmp_path: Path
):
    shop = small_shop
    staff = make_user("rules-staff", password=STAFF_PASSWORD, is_staff=True, is_superuser=True)
    # X and Y: two products a new visitor's "Recommended for you" does not show at all before the rule.
    before = serving.recommend("for_you", shopper=f"v:{tracking.new_visitor_id()}", preview=True)
    before_ids = [item.product_id for item in before.items]
    unseen = [p for p in shop.products if str(p.pk) not in before_ids]
    assert len(unseen) >= 2, before_ids
    x, y = unseen[-1], unseen[-2]

    # Staff open the add form of a cold-start rule and log in on the way.
    page.goto("/admin/recommendations/coldstartrule/add/")
    page.get_by_label("Username").fill(staff.username)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Add cold start rule")).to_be_visible()
    page.locator("#toggle-nav-sidebar").click()  # more room for the form (the admin remembers it for the visit)

    # Who: anonymous visitors. Where: for_you. What: X then Y, by hand.
    page.get_by_label("Name:").fill(RULE_NAME)
    page.get_by_label("Audience:").select_option("anonymous")
    page.locator("#id_placements").get_by_label("for_you", exact=True).check()
    page.get_by_label("Source:").select_option("hand_picked")
    page.get_by_label("Products:").fill(f"{x.pk}\n{y.pk}")

    # Preview lists what the values give, and saves nothing.
    page.get_by_role("button", name="Preview", exact=True).click()
    products = page.locator("#rec-rule-products tbody tr")
    expect(products).to_have_count(2)
    expect(products.nth(0)).to_contain_text(x.name)
    expect(products.nth(1)).to_contain_text(y.name)
    expect(page.locator("#rec-rule-preview")).to_contain_text("These values, not saved yet.")
    expect(page.get_by_label("Name:")).to_have_value(RULE_NAME)
    assert not ColdStartRule.objects.exists()
    # Enter in a field takes the form's first button, Preview: a half-edited rule is never saved by accident.
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.get_by_label("Name:").press("Enter")
    assert posted.value.status == 200, "a preview renders the form again; a save would redirect"
    expect(page.locator("#rec-rule-preview")).to_contain_text("These values, not saved yet.")
    expect(products).to_have_count(2)
    assert not ColdStartRule.objects.exists()
    screenshot(page, tmp_path, "admin-rule.png", page.locator("#rec-rule-preview"))

    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    rule = ColdStartRule.objects.get()
    assert (rule.audience, rule.placements, rule.products) == ("anonymous", ["for_you"], [str(x.pk), str(y.pk)])
    assert rule.updated_by == staff.username

    # A fresh anonymous browser: the home page's "Recommended for you" leads with X, then Y.
    visitor = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    visitor.set_default_timeout(TIMEOUT_MS)
    try:
        home = visitor.new_page()
        home.on("pageerror", lambda error: page_errors.append(str(error)))
        home.goto("/")
        for_you = home.locator('.rec-block[data-rec-placement="for_you"]')
        expect(for_you.locator(".rec-title")).to_have_text("Recommended for you")
        assert shown_ids(for_you)[:2] == [str(x.pk), str(y.pk)]
        expect(for_you.locator(".rec-item").nth(0)).to_contain_text(x.name)
        expect(for_you.locator(".rec-item").nth(1)).to_contain_text(y.name)
        # Its impressions are written once the response has gone out; wait, so the count below is settled.
        wait_for_event(home, event_type="impression", placement="for_you", visitor_id=visitor_id(visitor))
    finally:
        visitor.close()

    # The placement preview shows the same block for a new visitor and names the rule behind X and Y.
    impressions = Event.objects.filter(event_type="impression").count()
    page.goto("/admin/recommendations/placement/")
    page.get_by_role("link", name="Preview", exact=True).click()
    page.get_by_label("Placement", exact=True).select_option("for_you")
    page.get_by_label("A new anonymous visitor").check()
    page.get_by_role("button", name="Show the block").click()
    rows = page.locator("#rec-preview-items tbody tr")
    expect(rows.nth(0)).to_contain_text(x.name)
    expect(rows.nth(1)).to_contain_text(y.name)
    rule_link = rows.nth(0).get_by_role("link", name=f"cold-start rule “{RULE_NAME}”")
    expect(rule_link).to_be_visible()
    expect(page.locator("#rec-preview-model")).to_contain_text("serving model")
    screenshot(page, tmp_path, "preview.png", page.locator("#rec-preview-items"))
    assert Event.objects.filter(event_type="impression").count() == impressions, "the preview records nothing"

    rule_link.click()
    expect(page.get_by_label("Name:")).to_have_value(RULE_NAME)
    saved = page.locator("#rec-rule-products tbody tr")
    expect(saved).to_have_count(2)
    expect(saved.nth(0)).to_contain_text(x.name)
    assert page_errors == []
