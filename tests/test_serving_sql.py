"""Serving's PostgreSQL reads answer what the ORM answers, and a page's blocks are cached after its response.

`serving_sql` sends serving's reads as plain SQL on PostgreSQL; with `ENABLED` off the same calls go through the ORM,
as they do on SQLite. The two must agree row for row, type for type, or blocks would differ by database.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections, connection, models
from django.http import HttpResponse
from django.template import Context, Template
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from recommendations import catalog, serving, serving_sql, tracking
from recommendations.conf import rec_settings
from recommendations.lists import store
from recommendations.models import ProductProfile, RecommendationSet, StoredList
from recommendations.serving.profiles import _profiles
from recommendations.serving.shopper import _read_shopper_state
from shop.models import Product
from tests.factories import make_brand, make_category, make_product

pytestmark = pytest.mark.django_db


def both_ways(monkeypatch, read):
    """`read()` on the fast path and through the ORM, each in a fresh render pass."""
    with serving.render_pass(serving.RenderPass()):
        fast = read()
    monkeypatch.setattr(serving_sql, "ENABLED", False)
    with serving.render_pass(serving.RenderPass()):
        slow = read()
    monkeypatch.setattr(serving_sql, "ENABLED", True)
    return fast, slow


@pytest.fixture
def shopper():
    """A visitor with more events than serving reads: ties in time, impressions, searches, purchases older than the
    newest RECENT_EVENTS, a cart."""
    v = uuid.uuid4().hex
    now = timezone.now()
    tie = now - timedelta(minutes=5)
    events = [
        tracking.build_event("purchase", visitor_id=v, product_id=str(k), occurred_at=now - timedelta(days=30, hours=k))
        for k in range(3)
    ]
    events += [
        tracking.build_event("view", visitor_id=v, product_id=str(100 + k % 40), occurred_at=now - timedelta(hours=k))
        for k in range(serving.RECENT_EVENTS)
    ]
    events += [tracking.build_event("add_to_cart", visitor_id=v, product_id=str(k), occurred_at=tie) for k in (7, 8, 9)]
    events += [tracking.build_event("remove_from_cart", visitor_id=v, product_id="8", occurred_at=tie)]
    events += [tracking.build_event("impression", visitor_id=v, placement="for_you", occurred_at=now)]
    events += [tracking.build_event("search", visitor_id=v, query="kettle", occurred_at=now)]
    tracking.insert_events(events)
    return f"v:{v}"


def test_the_fast_path_is_what_serving_uses_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the fast path is PostgreSQL's")
    from recommendations.models import Event

    assert serving_sql.usable(Event) is not None


def test_the_shoppers_newest_events_read_the_same_both_ways(monkeypatch, shopper):
    fast, slow = both_ways(monkeypatch, lambda: _read_shopper_state(shopper))
    assert fast == slow
    assert fast.n_events == serving.RECENT_EVENTS
    assert sorted(fast.bought) == ["0", "1", "2"]  # older than the newest 200: the second query found them
    assert fast.cart == {"7", "9"}
    assert all(when.tzinfo is not None for _, when in fast.viewed)


def test_stored_lists_and_profiles_read_the_same_both_ways(monkeypatch):
    kitchen = make_category(slug="kitchen")
    products = [make_product(f"Pot {k}", category=kitchen, price=Decimal("12.50") + k) for k in range(4)]
    catalog.sync_products()
    ProductProfile.objects.create(product_id="imported", name="No price", price=None, in_stock=False)
    active = RecommendationSet.objects.create(status=RecommendationSet.Status.ACTIVE, activated_at=timezone.now())
    rows = [[str(p.pk), 1.0 - k / 10, f"because:{products[0].pk}"] for k, p in enumerate(products)]
    StoredList.objects.create(recommendation_set=active, placement="for_you", subject="v:a", items=rows)
    StoredList.objects.create(recommendation_set=active, placement="similar", subject="v:a", items=rows[:1])
    StoredList.objects.create(recommendation_set=active, placement="for_you", subject="v:b", items=[["imported", 2]])
    ids = [str(p.pk) for p in products] + ["imported", "unknown"]

    lists_fast, lists_slow = both_ways(
        monkeypatch, lambda: store.list_rows(active.pk, ["for_you", "similar"], ["v:a", "v:b", "v:c"])
    )
    assert sorted(lists_fast) == sorted(lists_slow)
    assert len(lists_fast) == 3
    profiles_fast, profiles_slow = both_ways(monkeypatch, lambda: _profiles(ids))
    assert profiles_fast == profiles_slow
    assert [type(v) for p in profiles_fast.values() for v in p] == [type(v) for p in profiles_slow.values() for v in p]
    assert profiles_fast["imported"][5] is None and profiles_fast[str(products[1].pk)][5] == Decimal("13.50")
    assert "unknown" not in profiles_fast


# -- caching a page's blocks after the response ------------------------------------------------------------------


FOR_YOU = '{% load recommendations %}{% recommendations "for_you" %}'


@pytest.fixture
def for_you_list():
    kitchen = make_category(slug="kitchen")
    products = [make_product(f"Pan {k}", category=kitchen) for k in range(3)]
    catalog.sync_products()
    visitor = uuid.uuid4().hex
    active = RecommendationSet.objects.create(status=RecommendationSet.Status.ACTIVE, activated_at=timezone.now())
    StoredList.objects.create(
        recommendation_set=active,
        placement="for_you",
        subject=f"v:{visitor}",
        items=[[str(p.pk), 1.0, "for_you"] for p in products],
    )
    serving.forget_active_set()
    return visitor


def page_request(visitor: str):
    request = RequestFactory().get("/")
    request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = visitor
    return request


def reads_stored_lists(queries: CaptureQueriesContext) -> bool:
    return any(StoredList._meta.db_table in q["sql"] for q in queries.captured_queries)


def through_middleware(visitor: str) -> HttpResponse:
    def view(request):
        return HttpResponse(Template(FOR_YOU).render(Context({"request": request})))

    return tracking.VisitorMiddleware(view)(page_request(visitor))


def closing(response: HttpResponse) -> None:
    """What a server does once it has sent the response (the database connection kept open, as the test client does)."""
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def test_a_pages_blocks_are_cached_once_its_response_has_gone_out(for_you_list):
    first = through_middleware(for_you_list)
    assert b"data-rec-product" in first.content
    with CaptureQueriesContext(connection) as before_close:  # not cached yet: the response is still going out
        through_middleware(for_you_list)
    assert reads_stored_lists(before_close)

    closing(first)  # the server has sent it
    with CaptureQueriesContext(connection) as after_close:
        second = through_middleware(for_you_list)
    assert not reads_stored_lists(after_close)
    assert second.content.count(b"data-rec-product") == first.content.count(b"data-rec-product")


def test_without_the_middleware_a_block_is_cached_at_once(for_you_list):
    Template(FOR_YOU).render(Context({"request": page_request(for_you_list)}))
    with CaptureQueriesContext(connection) as again:
        Template(FOR_YOU).render(Context({"request": page_request(for_you_list)}))
    assert not reads_stored_lists(again)


# -- loading the host's products ---------------------------------------------------------------------------------


class _ActiveOnlyManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(is_active=True)


class ActiveOnlyProduct(Product):
    """A host model whose default manager filters: plain SQL would read what the ORM does not."""

    objects = _ActiveOnlyManager()

    class Meta:
        proxy = True
        app_label = "shop"


def test_products_load_in_plain_sql_exactly_as_the_orm_loads_them():
    if connection.vendor != "postgresql":
        pytest.skip("the plain loader is PostgreSQL's")
    brand = make_brand()
    products = [make_product(price=Decimal("3.10")), make_product(brand=brand, price=Decimal("1234.56"), stock=0)]
    ids = [str(p.pk) for p in products] + ["999999999", "not-a-pk"]
    with CaptureQueriesContext(connection) as queries:
        fast = catalog.get_products(ids)
    assert len(queries) == 1 and "= ANY(" in queries[0]["sql"]
    slow = {str(p.pk): p for p in Product.objects.filter(pk__in=[p.pk for p in products])}
    assert sorted(fast) == sorted(slow) == sorted(str(p.pk) for p in products)
    for pid, obj in fast.items():
        assert type(obj) is Product and obj._state.db == "default" and not obj._state.adding
        for field in Product._meta.concrete_fields:
            mine, theirs = getattr(obj, field.attname), getattr(slow[pid], field.attname)
            assert mine == theirs and type(mine) is type(theirs), field.name
        assert obj.get_absolute_url() == slow[pid].get_absolute_url()
    assert fast[str(products[1].pk)].brand == brand  # relations still load lazily


def test_a_default_manager_that_filters_keeps_the_orm(settings):
    hidden = make_product(is_active=False)
    shown = make_product()
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "PRODUCT_MODEL": "shop.ActiveOnlyProduct"}
    assert catalog._plain_loader(ActiveOnlyProduct, "pk") is None
    assert catalog._plain_loader(Product, "pk") is not None or connection.vendor != "postgresql"
    assert list(catalog.get_products([str(hidden.pk), str(shown.pk)])) == [str(shown.pk)]
