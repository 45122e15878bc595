"""The demo in Simplified Chinese: block titles and reasons from the app's catalogue, the shop's own words from the
shop's, chosen by the browser's Accept-Language or the language switch; English stays the default."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import active_lists, block_html, make_small_shop, visitor

pytestmark = pytest.mark.django_db

CHINESE = {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}


@pytest.fixture
def shop():
    """The small shop with the lists a precompute would store for the Pan's page and for one returning visitor."""
    products = make_small_shop()
    pan, pot, wok, kettle, rake, hose, hoe = (
        products[name] for name in ("Pan", "Pot", "Wok", "Kettle", "Rake", "Hose", "Hoe")
    )
    shopper = visitor()
    active_lists(
        similar={str(pan.pk): [(pot, 0.9, "also"), (kettle, 0.8, f"similar:{wok.pk}")]},
        bought_together={str(pan.pk): [(wok, 0.9, f"together:{pan.pk}"), (rake, 0.7, f"together:{pan.pk}")]},
        for_you={f"v:{shopper}": [(kettle, 0.9, f"because:{pan.pk}"), (rake, 0.8, "for_you")]},
        trending={"garden": [(hose, 0.9, "trending:garden"), (hoe, 0.8, "trending:garden")]},
    )
    return products, shopper


def page(client: Client, url: str, **headers: str) -> str:
    response = client.get(url, **headers)
    assert response.status_code == 200
    return response.content.decode()


def test_a_product_page_in_chinese_shows_translated_titles_and_reasons(client, shop):
    products, _shopper = shop
    html = page(client, products["Pan"].get_absolute_url(), **CHINESE)
    similar, together = block_html(html, "similar"), block_html(html, "bought_together")
    assert '<h2 class="rec-title">相似商品</h2>' in similar
    assert "经常一起浏览" in similar  # "also": often viewed together
    assert "与 Wok 相似" in similar  # an anchored reason keeps the product's own name
    assert '<h2 class="rec-title">经常一起购买</h2>' in together
    assert together.count("常与 Pan 一起购买") == 2
    for english in ("Similar products", "Often viewed together", "Similar to Wok", "Bought together with Pan"):
        assert english not in html
    # The shop's own words come from the shop's catalogue, and the page says which language it is in.
    assert '<html lang="zh-hans">' in html and "加入购物车" in html and "Add to cart" not in html


def test_the_home_page_in_chinese_shows_the_shoppers_list_with_its_reason(client, shop):
    _products, shopper = shop
    client.cookies["rec_vid"] = shopper
    html = page(client, reverse("home"), **CHINESE)
    mine = block_html(html, "for_you")
    assert '<h2 class="rec-title">为你推荐</h2>' in mine
    assert "因为你看过 Pan" in mine and "根据你的喜好挑选" in mine
    assert "Recommended for you" not in html and "Because you looked at" not in html
    listing = page(client, reverse("product_list") + "?category=garden", **CHINESE)
    trending = block_html(listing, "trending")
    assert '<h2 class="rec-title">当下热门</h2>' in trending and "Garden 热门" in trending
    assert "Trending now" not in listing and "Trending in Garden" not in listing


def test_english_stays_the_default_and_a_block_cached_in_one_language_is_not_served_in_the_other(client, shop):
    _products, shopper = shop
    client.cookies["rec_vid"] = shopper
    assert "因为你看过 Pan" in block_html(page(client, reverse("home"), **CHINESE), "for_you")
    english = page(client, reverse("home"))  # same shopper, same lists, the block cache already warm
    mine = block_html(english, "for_you")
    assert '<h2 class="rec-title">Recommended for you</h2>' in mine
    assert "Because you looked at Pan" in mine and "因为" not in english
    assert '<html lang="en">' in english


def test_a_title_staff_changed_is_shown_as_written(client, shop):
    from recommendations.models import Placement
    from recommendations.tunables import snapshot

    products, _shopper = shop
    Placement.objects.filter(name="similar").update(title="Our picks")
    snapshot.flush()
    assert '<h2 class="rec-title">Our picks</h2>' in page(client, products["Pan"].get_absolute_url(), **CHINESE)


def test_the_language_switch_sets_chinese_and_returns_to_the_page(client, shop):
    products, _shopper = shop
    url = products["Pan"].get_absolute_url()
    html = page(client, url)
    # One small form per language, posting to set_language with the CSRF token and the page to come back to.
    assert html.count(f'action="{reverse("set_language")}"') == 2
    assert f'<input type="hidden" name="next" value="{url}">' in html
    assert 'name="language" value="zh-hans"' in html and ">简体中文</button>" in html
    response = client.post(reverse("set_language"), {"language": "zh-hans", "next": url})
    assert response.status_code == 302 and response["Location"] == url
    chinese = page(client, url)  # the language cookie now decides, with no Accept-Language
    assert "相似商品" in chinese and "Similar products" not in chinese
    client.post(reverse("set_language"), {"language": "en", "next": url})
    assert "Similar products" in page(client, url)
