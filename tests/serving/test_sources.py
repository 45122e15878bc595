"""What a block may fill from: "Frequently bought together" shows co-purchases only and no block below its minimum (2);
a page shows each shared list (trending, best sellers, ...) under one title.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import RequestFactory

from recommendations import serving
from recommendations.conf import rec_settings
from recommendations.models import Placement
from tests.factories import active_lists, block_html, make_small_shop, render, rendered_ids, visitor

pytestmark = pytest.mark.django_db


REASON = re.compile(r'class="[^"]*\brec-reason\b[^"]*">\s*([^<]+?)\s*<')


@pytest.fixture
def shop():
    return make_small_shop()


def app_templates_only(settings, *dirs: Path) -> None:
    """Render with the app's own templates (and `dirs`), not the demo shop's overrides."""
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": list(dirs)}]


def ids(block: serving.Block) -> list[str]:
    return [item.product_id for item in block.items]


def tune(name: str, **fields) -> None:
    row = Placement.objects.get(name=name)
    for key, value in fields.items():
        setattr(row, key, value)
    row.save()


def page_request(visitor_id: str | None = None):
    request = RequestFactory().get("/")
    request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = visitor_id or visitor()
    return request


def test_bought_together_shows_co_purchases_only_never_similar_or_trending_fillers(shop):
    pan = str(shop["Pan"].pk)
    active_lists(
        bought_together={pan: [(shop["Kettle"], 0.9, f"together:{pan}"), (shop["Hose"], 0.5, f"together:{pan}")]},
        similar={pan: [(shop["Pot"], 0.9, "also"), (shop["Wok"], 0.8, "also")]},
        trending={"": [(shop["Rake"], 9, "trending"), (shop["Hoe"], 8, "trending")]},
    )
    block = serving.recommend("bought_together", product_id=pan)
    assert ids(block) == [str(shop["Kettle"].pk), str(shop["Hose"].pk)]
    assert {item.reason_text for item in block.items} == {"Bought together with Pan"}
    # The cart page: the cart's co-purchases, nothing else.
    cart = serving.recommend("bought_together", cart=[pan], shopper=f"v:{visitor()}")
    assert ids(cart) == [str(shop["Kettle"].pk), str(shop["Hose"].pk)]


def test_bought_together_below_its_minimum_of_two_is_not_shown(shop):
    pan, rake = str(shop["Pan"].pk), str(shop["Rake"].pk)
    active_lists(
        bought_together={
            pan: [(shop["Kettle"], 0.9, f"together:{pan}")],
            rake: [(shop["Hose"], 0.8, f"together:{rake}")],
        },
        trending={"": [(shop["Hoe"], 9, "trending"), (shop["Wok"], 8, "trending")]},
    )
    assert serving.placement_config("bought_together").min_size == 2
    assert serving.recommend("bought_together", product_id=pan).items == []
    assert serving.recommend("bought_together", cart=[pan]).items == []
    html = render('{% load recommendations %}{% recommendations "bought_together" product=p %}', page_request(), p=pan)
    assert "rec-block" not in html
    # Two products in the cart, one partner each: two real co-purchases make a block.
    assert ids(serving.recommend("bought_together", cart=[pan, rake])) == [str(shop["Kettle"].pk), str(shop["Hose"].pk)]
    # Asked for one item, one is enough.
    assert ids(serving.recommend("bought_together", product_id=pan, limit=1)) == [str(shop["Kettle"].pk)]


def titled_reasons(html: str) -> dict[str, set[str]]:
    """Each reason shown on the page -> the titles of the blocks it was shown under."""
    found: dict[str, set[str]] = {}
    for section in re.findall(r'<section class="rec-block".*?</section>', html, re.S):
        title = re.search(r'class="rec-title">([^<]*)<', section).group(1).strip()
        for reason in REASON.findall(section):
            found.setdefault(reason, set()).add(title)
    return found


def test_a_new_visitors_home_shows_each_list_under_one_title(settings, shop):
    app_templates_only(settings)
    # A short trending list: the trending block must not top itself up from the best sellers for_you shows above.
    active_lists(trending={"": [(shop["Hose"], 9, "trending"), (shop["Shears"], 8, "trending")]})
    home = (
        '{% load recommendations %}{% recommendations "for_you" limit=4 %}'
        '{% recommendations "recently_viewed" limit=6 %}{% recommendations "trending" %}'
    )
    html = render(home, page_request())
    assert rendered_ids(block_html(html, "for_you")), "a new visitor still gets a for_you block"
    assert rendered_ids(block_html(html, "trending")) == [str(shop["Hose"].pk), str(shop["Shears"].pk)]
    repeated = {reason: titles for reason, titles in titled_reasons(html).items() if len(titles) > 1}
    assert repeated == {}
    assert "Trending now" not in block_html(html, "for_you")


def test_a_block_does_not_fill_from_a_list_a_block_above_showed_under_another_title(settings, shop):
    app_templates_only(settings)
    tune("for_you", fallback=["trending", "popular"])  # a shop that asks for_you to fall back to trending
    trending = [(shop[n], 9 - i, "trending") for i, n in enumerate(["Pan", "Pot", "Wok", "Kettle", "Rake", "Hoe"])]
    active_lists(trending={"": trending})
    page = '{% load recommendations %}{% recommendations "trending" limit=2 %}{% recommendations "for_you" limit=3 %}'
    html = render(page, page_request())
    for_you = block_html(html, "for_you")
    assert len(rendered_ids(for_you)) == 3
    assert set(REASON.findall(for_you)) == {"Popular"}, "trending already has its own block on this page"
    # Alone (the API, or a page without a trending block) the same placement does fall back to trending.
    alone = serving.recommend("for_you", shopper=f"v:{visitor()}", limit=3)
    assert {item.reason_text for item in alone.items} == {"Trending now"}
