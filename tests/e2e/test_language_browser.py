"""A shopper switches the demo to Simplified Chinese with one click in the header, and back to English.

The switch is a small POST form per language (Django's set_language, with the CSRF token and the current page as
`next`), so the same page comes back in the other language: the shop's own words, the blocks' titles and the reasons
under each recommendation. The screenshot of the Chinese home page goes to the test's temporary directory on every
run; with UPDATE_SCREENSHOTS=1 it replaces docs/img/zh.png, the README's picture of it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.browser import VIEWPORT
from tests.e2e.store import SmallShop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_one_click_shows_the_shop_and_its_recommendations_in_chinese(
    page: Page, page_errors: list[str], small_shop: SmallShop, tmp_path: Path
):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(small_shop.shopper.username)
    page.get_by_label("Password").fill(small_shop.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/$"))  # LOGIN_REDIRECT_URL: the home page
    for_you = page.locator('.rec-block[data-rec-placement="for_you"]')
    expect(for_you.locator(".rec-title")).to_have_text("Recommended for you")
    expect(for_you.locator(".rec-reason").first).to_contain_text("Because you looked at")
    expect(page.locator("html")).to_have_attribute("lang", "en")

    page.get_by_role("button", name="简体中文").click()
    expect(page).to_have_url(re.compile(r"/$"))  # back on the same page
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(for_you.locator(".rec-title")).to_have_text("为你推荐")
    expect(for_you.locator(".rec-reason").first).to_contain_text("因为你看过")
    expect(page.locator(".hero h1")).to_have_text("日常生活好物")
    expect(page.get_by_role("button", name="搜索")).to_be_visible()
    expect(page.get_by_role("button", name="简体中文")).to_be_disabled()  # the current language, pressed
    expect(page.locator("body")).not_to_contain_text("Recommended for you")

    shot = tmp_path / "zh.png"
    box = for_you.bounding_box()
    assert box is not None
    height = max(VIEWPORT["height"] // 2, int(box["y"] + box["height"]) + 16)
    page.screenshot(path=shot, full_page=True, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img" / "zh.png").write_bytes(shot.read_bytes())

    # The choice sticks (the language cookie): a product page follows in Chinese, with its similar products.
    for_you.locator(".rec-item").first.locator(".card-title a").click()
    similar = page.locator('.rec-block[data-rec-placement="similar"]')
    expect(similar.locator(".rec-title")).to_have_text("相似商品")
    expect(page.get_by_role("button", name="加入购物车")).to_be_visible()

    page.get_by_role("button", name="English").click()
    expect(similar.locator(".rec-title")).to_have_text("Similar products")
    expect(page.get_by_role("button", name="Add to cart")).to_be_visible()
    assert page_errors == []
