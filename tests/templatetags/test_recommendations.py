"""The template tags as a host's page renders them: the default card shows the engine's profile (name, price), a form in
an overridden card gets the request's CSRF token, and a page still renders, without the block, when the database is
unreachable (a real connection to a closed port).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.template import Context, Template
from django.test import RequestFactory

from recommendations.conf import rec_settings
from recommendations.models import (
    ProductProfile,
)
from tests.factories import (
    active_lists,
    block_html,
    database_unreachable,
    make_small_shop,
    make_user,
    render,
    rendered_ids,
    visitor,
)

pytestmark = pytest.mark.django_db
POSTGRESQL_ONLY = pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"
)


@POSTGRESQL_ONLY
def test_a_page_still_renders_without_the_block_when_the_database_is_unreachable():
    request = RequestFactory().get("/")
    template = Template('{% load recommendations %}[{% recommendations "trending" %}]')
    with database_unreachable():
        rendered = template.render(Context({"request": request}))
    assert "".join(rendered.split()) == "[]"


TRENDING = '{% load recommendations %}{% recommendations "trending" %}'


@pytest.fixture
def shop():
    return make_small_shop()


def app_templates_only(settings, *dirs: Path) -> None:
    """Render with the app's own templates (and `dirs`), not the demo shop's overrides."""
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": list(dirs)}]


def page_request(visitor_id: str | None = None):
    request = RequestFactory().get("/")
    request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = visitor_id or visitor()
    return request


def test_the_default_card_shows_the_profile_name_and_price_of_a_host_model_without_those_fields(settings):
    app_templates_only(settings)
    # A host whose product model has neither `name` nor `price` (a User stands in for it): sync_products filled
    # the profile through PRODUCT_FIELDS, and that is what the card reads.
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "PRODUCT_MODEL": "auth.User"}
    desk = make_user("sku-desk")
    assert not hasattr(desk, "name") and not hasattr(desk, "price")
    ProductProfile.objects.create(
        product_id=str(desk.pk), name="Walnut Desk", price=Decimal("129.50"), category="office", brand="Oakworks"
    )
    active_lists(trending={"": [(desk, 9.0, "trending")]})
    block = block_html(render(TRENDING, page_request()), "trending")
    assert rendered_ids(block) == [str(desk.pk)]
    assert re.search(r'class="rec-name">\s*Walnut Desk\s*<', block), block
    assert re.search(r'class="rec-price">\s*129\.50\s*<', block), block


def test_a_form_in_an_overridden_item_template_gets_the_requests_csrf_token(settings, tmp_path, shop):
    (tmp_path / "recommendations").mkdir()
    (tmp_path / "recommendations" / "block_item.html").write_text(
        '<form method="post" action="/cart/add/{{ item.product_id }}/">{% csrf_token %}<button>Add</button></form>'
    )
    app_templates_only(settings, tmp_path)
    active_lists(trending={"": [(shop["Pan"], 9.0, "trending"), (shop["Pot"], 8.0, "trending")]})
    request = page_request()
    html = render(TRENDING, request)
    tokens = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert tokens and len(tokens) == len(rendered_ids(html)), html
    assert all(len(token) == 64 for token in tokens)
    assert request.META.get("CSRF_COOKIE"), "the token was issued for this request, so its cookie goes out with it"
