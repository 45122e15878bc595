"""The template tags as a shop page renders them, over lists from a real precompute."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta

import pytest
from django.template import Context, Template
from django.test import RequestFactory
from django.utils import timezone

from recommendations import catalog, tracking
from recommendations.conf import rec_settings
from recommendations.lists.precompute import run_precompute
from tests.factories import make_category, make_product, make_user

pytestmark = pytest.mark.django_db

FOR_YOU = "{% load recommendations %}{% recommended_for_you %}"
SIMILAR = "{% load recommendations %}{% similar_products product %}"


def render(source, request=None, **context):
    return Template(source).render(Context({"request": request, **context}))


def products_in(html):
    return re.findall(r'data-rec-product="([^"]+)"', html)


def visitor_request(visitor_id=None, user=None):
    request = RequestFactory().get("/")
    if visitor_id:
        request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = visitor_id
    if user is not None:
        request.user = user
    return request


@pytest.fixture
def shop():
    """Hammer+Nails are co-viewed, Kite+Yo-yo too; Kite is the most viewed overall."""
    tools, toys = make_category(slug="tools"), make_category(slug="toys")
    p = {
        "hammer": make_product("Hammer", category=tools),
        "nails": make_product("Nails", category=tools),
        "kite": make_product("Kite", category=toys),
        "yoyo": make_product("Yo-yo", category=toys),
    }
    catalog.sync_products()
    events = []
    for n in range(4):
        events += [("view", f"{n}a" * 16, p["hammer"]), ("view", f"{n}a" * 16, p["nails"])]
        events += [("view", f"{n}c" * 16, p["kite"]), ("view", f"{n}c" * 16, p["yoyo"])]
    events += [("view", f"{n}e" * 16, p["kite"]) for n in range(4)]
    tracking.store_events(tracking.build_event(t, visitor_id=v, product_id=x.pk) for t, v, x in events)
    return p


def test_a_shopper_with_history_sees_their_own_list(shop):
    visitor = uuid.uuid4().hex
    earlier = timezone.now() - timedelta(hours=3)  # before this session: the precomputed list speaks alone
    tracking.store_events(
        [tracking.build_event("view", visitor_id=visitor, product_id=shop["hammer"].pk, occurred_at=earlier)]
    )
    run_precompute()
    html = render(FOR_YOU, visitor_request(visitor))
    assert 'data-rec-placement="for_you"' in html
    assert products_in(html)[0] == str(shop["nails"].pk)
    assert "Because you looked at Hammer" in html
    assert "Recommended for you" in html


def test_a_logged_in_shopper_is_recognised_by_user(shop):
    user = make_user()
    earlier = timezone.now() - timedelta(hours=3)
    tracking.store_events(
        [
            tracking.build_event(
                "purchase", user_id=str(user.pk), visitor_id="", product_id=shop["yoyo"].pk, occurred_at=earlier
            )
        ]
    )
    run_precompute()
    html = render(FOR_YOU, visitor_request(uuid.uuid4().hex, user=user))
    found = products_in(html)
    assert found[0] == str(shop["kite"].pk)
    assert str(shop["yoyo"].pk) not in found, "already bought"
    assert "Because you looked at Yo-yo" in html


def test_a_shopper_without_history_sees_best_sellers_not_trending(shop):
    run_precompute()
    html = render(FOR_YOU, visitor_request(uuid.uuid4().hex))
    assert products_in(html)
    assert "Popular" in html
    assert "Trending now" not in html, "trending has a block of its own; for_you does not repeat it"
    assert "Because you looked at" not in html


def test_similar_products_shows_neighbours_never_the_product_itself(shop):
    run_precompute()
    html = render(SIMILAR, visitor_request(), product=shop["hammer"])
    found = products_in(html)
    assert found[0] == str(shop["nails"].pk)
    assert str(shop["hammer"].pk) not in found
    assert "Often viewed together" in html
    assert len(found) == 3, "topped up from trending so the block is full while the catalog has products"


def test_a_broken_product_argument_renders_nothing_and_logs(shop, caplog):
    run_precompute()
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        html = render(SIMILAR, visitor_request(), product=object())
    assert html.strip() == ""
    assert any("similar failed to render" in r.getMessage() for r in caplog.records)


class Unstorable:
    """A product-like object whose id the database refuses (PostgreSQL strings cannot hold NUL)."""

    pk = "bad\x00id"


def test_a_database_error_inside_falls_back_and_logs(shop, caplog):
    run_precompute()
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        html = render(SIMILAR, visitor_request(), product=Unstorable())
    assert any("similar failed for product" in r.getMessage() for r in caplog.records)
    assert products_in(html), "the fallback still fills the block"
    assert "Often viewed together" not in html


def test_trending_lower_on_the_page_skips_what_for_you_already_shows(shop):
    run_precompute()
    request = visitor_request(uuid.uuid4().hex)
    html = render(
        "{% load recommendations %}{% recommended_for_you limit=2 %}<hr>{% trending_products limit=2 %}", request
    )
    for_you, trending = html.split("<hr>")
    shown, below = products_in(for_you), products_in(trending)
    assert len(shown) == 2 and len(below) == 2
    assert not set(shown) & set(below)
    # Rendered alone, trending leads with what for_you showed: the exclusion is what moved it.
    assert set(
        products_in(render("{% load recommendations %}{% trending_products limit=2 %}", visitor_request()))
    ) == set(shown)
