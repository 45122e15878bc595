"""Issue 17, what shoppers see: the default card, bought together, one list per title, SQLite under concurrent writes.

- Item 6: the default card renders the engine's profile (name, price), not attributes the host's model may not have;
  blocks render with the request's context, so a form in a card gets its CSRF token.
- Item 11: "Frequently bought together" shows co-purchases only, and no block below its minimum (2).
- Item 12: a page shows each shared list (trending, best sellers, ...) under one title.
- Item 14: the demo's SQLite settings let two writers meet without "database is locked"; the in-process refresh
  after an event is tried once more when it meets one anyway.
The browser side of 11 to 13 is in tests/e2e/test_shopper_sees.py.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.db import OperationalError
from django.test import RequestFactory

from recommendations import serving, tasks
from recommendations.conf import rec_settings
from recommendations.models import Placement, ProductProfile
from tests.factories import active_lists, block_html, make_small_shop, make_user, render, rendered_ids, visitor

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
TRENDING = '{% load recommendations %}{% recommendations "trending" %}'
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


# -- item 6: the default card and the request context -------------------------------------------------------------


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


# -- item 11: frequently bought together ----------------------------------------------------------------------------


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


def test_the_data_migration_moves_built_in_rows_still_on_the_old_fallback_and_leaves_edited_ones(shop):
    migration = importlib.import_module("recommendations.migrations.0009_placement_fallbacks_without_repeats")
    old_together, new_together = migration.CHANGES["bought_together"]
    tune("bought_together", fallback=old_together)
    tune("for_you", fallback=["popular", "trending"])  # staff chose this one
    migration.forwards(django_apps, None)
    assert Placement.objects.get(name="bought_together").fallback == new_together == []
    assert Placement.objects.get(name="for_you").fallback == ["popular", "trending"]
    tune("for_you", fallback=migration.CHANGES["for_you"][0])
    migration.forwards(django_apps, None)
    assert Placement.objects.get(name="for_you").fallback == ["rules", "popular"]


# -- item 12: one title per list on a page --------------------------------------------------------------------------


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


# -- item 14: SQLite under concurrent writes ------------------------------------------------------------------------

WRITERS = textwrap.dedent(
    """
    import sys, threading, time
    import django
    django.setup()
    from django.conf import settings
    from django.db import connection, connections, transaction
    if sys.argv[1] == "plain":
        settings.DATABASES["default"]["OPTIONS"] = {}  # Django's SQLite defaults, as the demo had them
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE hits (n integer)")
    errors = []

    def writer(n, delay):
        time.sleep(delay)
        try:
            with transaction.atomic():  # a request: it reads, then writes (an event, a refreshed list)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM hits")
                    time.sleep(0.3)
                    cursor.execute("INSERT INTO hits VALUES (%s)", [n])
        except Exception as exc:
            errors.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n, n * 0.05)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM hits")
        print(cursor.fetchone()[0], "|".join(errors))
    """
)


def two_writers(tmp_path: Path, mode: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CACHE_URL", "CELERY_BROKER_URL")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / f'{mode}.sqlite3'}", DJANGO_SETTINGS_MODULE="shop.settings")
    done = subprocess.run(
        [sys.executable, "-c", WRITERS, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rows, _, errors = done.stdout.strip().partition(" ")
    return int(rows), errors


def test_two_writers_on_the_demo_sqlite_settings_both_commit(tmp_path):
    assert two_writers(tmp_path, "demo") == (2, "")


def test_the_same_two_writers_on_djangos_sqlite_defaults_meet_database_is_locked(tmp_path):
    # What the demo did before: proves the scenario above is a real collision, not two writers taking turns.
    rows, errors = two_writers(tmp_path, "plain")
    assert rows == 1 and "database is locked" in errors


def test_an_in_process_refresh_that_meets_database_is_locked_is_tried_once_more(monkeypatch, caplog):
    calls = []

    def refresh_shopper(shopper: str) -> int:
        calls.append(shopper)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return 1

    monkeypatch.setattr("recommendations.lists.refresh.refresh_shopper", refresh_shopper)
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        tasks._refresh_quietly(["v:a"])
    assert calls == ["v:a", "v:a"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_in_process_refresh_that_keeps_failing_is_logged_and_never_raises(monkeypatch, caplog):
    calls = []

    def refresh_shopper(shopper: str) -> int:
        calls.append(shopper)
        raise OperationalError("database is locked")

    monkeypatch.setattr("recommendations.lists.refresh.refresh_shopper", refresh_shopper)
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        tasks._refresh_quietly(["v:b"])
    assert calls == ["v:b", "v:b"]
    assert any("refresh of" in r.getMessage() for r in caplog.records)
