"""Near-real-time refresh of one shopper's for_you list between full precomputes."""

from __future__ import annotations

import base64
import json

import pytest
from celery import current_app
from django.conf import settings
from django.template import Context, Template
from django.test import Client, RequestFactory, override_settings

from recommendations import catalog, tracking
from recommendations.conf import rec_settings
from recommendations.lists.precompute import run_precompute
from recommendations.lists.refresh import refresh_shopper
from recommendations.models import StoredList
from recommendations.serving import stored_items
from recommendations.tasks import EAGER_REFRESH_MAX_SHOPPERS, schedule_refresh
from tests.factories import make_category, make_product

pytestmark = pytest.mark.django_db


def store(rows):
    tracking.store_events(tracking.build_event(t, visitor_id=v, product_id=str(p.pk)) for v, t, p in rows)


@pytest.fixture
def shop():
    """Two categories; shoppers co-view within a category, some buy, one browses across both."""
    tools, toys = make_category(slug="tools"), make_category(slug="toys")
    p = {
        name: make_product(name, category=c)
        for name, c in [
            ("Hammer", tools),
            ("Nails", tools),
            ("Saw", tools),
            ("Drill", tools),
            ("Kite", toys),
            ("Yo-yo", toys),
            ("Ball", toys),
            ("Puzzle", toys),
        ]
    }
    catalog.sync_products()
    rows = []
    for n in range(6):
        rows += [(f"t{n}", "view", p["Hammer"]), (f"t{n}", "view", p["Nails"]), (f"t{n}", "view", p["Saw"])]
        rows += [(f"k{n}", "view", p["Kite"]), (f"k{n}", "view", p["Yo-yo"]), (f"k{n}", "add_to_cart", p["Ball"])]
        if n % 2:
            rows += [(f"t{n}", "purchase", p["Drill"]), (f"k{n}", "view", p["Puzzle"]), (f"k{n}", "view", p["Saw"])]
    rows += [("mixed", "view", p["Hammer"]), ("mixed", "purchase", p["Kite"]), ("mixed", "add_to_cart", p["Ball"])]
    store(rows)
    run_precompute()
    return p


@pytest.mark.parametrize("shopper", ["v:t1", "v:k0", "v:k3", "v:mixed"])
def test_refresh_reproduces_the_batch_list(shop, shopper):
    batch = stored_items("for_you", shopper)
    assert batch, "the batch engine gave this shopper a list"
    refresh_shopper(shopper)
    refreshed = stored_items("for_you", shopper)
    assert [row[0] for row in refreshed] == [row[0] for row in batch]
    assert [row[2] for row in refreshed] == [row[2] for row in batch]
    for (_, new, _), (_, old, _) in zip(refreshed, batch, strict=True):
        assert new == pytest.approx(old, rel=1e-4)


def test_a_new_view_changes_the_list_without_a_precompute(shop):
    assert stored_items("for_you", "v:newcomer") == []
    store([("newcomer", "view", shop["Kite"])])
    assert refresh_shopper("v:newcomer") > 0
    items = stored_items("for_you", "v:newcomer")
    # Everyone who viewed the kite also viewed the yo-yo and carted the ball: those two lead.
    assert {row[0] for row in items[:2]} == {str(shop["Yo-yo"].pk), str(shop["Ball"].pk)}
    assert {row[2] for row in items} == {f"because:{shop['Kite'].pk}"}
    # Nobody who looked at the kite looked at the nails.
    assert str(shop["Nails"].pk) not in {row[0] for row in items}


def test_bought_items_leave_the_refreshed_list(shop):
    store([("newcomer", "view", shop["Kite"])])
    refresh_shopper("v:newcomer")
    assert str(shop["Yo-yo"].pk) in [row[0] for row in stored_items("for_you", "v:newcomer")]
    store([("newcomer", "purchase", shop["Yo-yo"])])
    refresh_shopper("v:newcomer")
    assert str(shop["Yo-yo"].pk) not in [row[0] for row in stored_items("for_you", "v:newcomer")]


def test_refresh_does_nothing_without_an_active_set():
    product = make_product("Lonely")
    catalog.sync_products()
    store([("solo", "view", product)])
    assert refresh_shopper("v:solo") is None
    assert not StoredList.objects.exists()


@pytest.fixture
def eager():
    """Run tasks in-process, as the demo does without a broker."""
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


def render_for_you(client: Client) -> str:
    request = RequestFactory().get("/")
    request.COOKIES.update({k: v.value for k, v in client.cookies.items()})
    return Template("{% load recommendations %}{% recommended_for_you %}").render(Context({"request": request}))


def test_browsing_the_shop_changes_for_you_on_the_next_page(shop, eager, django_capture_on_commit_callbacks):
    client = Client()
    client.get("/")
    before = render_for_you(client)
    assert "Because you looked at" not in before
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(shop["Kite"].get_absolute_url()).status_code == 200
    after = render_for_you(client)
    assert "Because you looked at Kite" in after
    assert f'data-rec-product="{shop["Yo-yo"].pk}"' in after


def test_refresh_can_be_switched_off(shop, eager, django_capture_on_commit_callbacks):
    client = Client()
    client.get("/")
    with (
        override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, "REALTIME_REFRESH": False}),
        django_capture_on_commit_callbacks(execute=True),
    ):
        client.get(shop["Kite"].get_absolute_url())
    shopper = f"v:{client.cookies[rec_settings.VISITOR_COOKIE_NAME].value}"
    assert stored_items("for_you", shopper) == [], "no refresh task rewrote the stored list"
    # The page still follows the session: serving re-ranks with this session's events, refresh or not.
    assert "Because you looked at Kite" in render_for_you(client)


@pytest.mark.skipif(settings.CELERY_TASK_ALWAYS_EAGER, reason="needs a real broker")
def test_a_burst_of_events_sends_one_refresh(shop, django_capture_on_commit_callbacks):
    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = broker.llen("celery")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        for _ in range(5):
            schedule_refresh(["v:burst"])
        schedule_refresh(["v:other", "v:burst", "v:third"])
    assert len(callbacks) == 2
    assert broker.llen("celery") - before == 2
    bodies = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in broker.lrange("celery", 0, 1)]
    assert [args for args, _, _ in bodies] == [[["v:other", "v:third"]], [["v:burst"]]]
    assert rec_settings.REFRESH_DEBOUNCE_SECONDS > 0


def test_a_bulk_batch_is_not_refreshed_inside_the_request(shop, eager, django_capture_on_commit_callbacks):
    """Without a broker, refreshing hundreds of shoppers would stall the request: only small batches refresh."""
    store([("newcomer", "view", shop["Kite"])])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        schedule_refresh([f"v:bulk{n}" for n in range(EAGER_REFRESH_MAX_SHOPPERS + 1)])
    assert callbacks == []
    with django_capture_on_commit_callbacks(execute=True):
        schedule_refresh(["v:newcomer"])
    assert stored_items("for_you", "v:newcomer")
