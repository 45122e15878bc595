"""Serving keeps product profiles and a set's product lists between pages, and never serves them stale.

A built block would otherwise read dozens of profiles and, on a product page or for a shopper browsing now, several
lists from the database on every page. Every write of profiles (a host product saved or deleted, `sync_products`, an
import, a profile saved in the admin) notes which products it touched; a process that sees the counter move drops
those products and keeps the rest. A set's product and shared lists never change once it is active; a shopper's
for_you list does (refresh), so it is never kept.
"""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from recommendations import catalog, serving
from recommendations.lists.precompute import activate_set
from recommendations.models import ProductProfile, RecommendationSet, StoredList
from shop.models import Product
from tests.factories import make_category, make_product

pytestmark = pytest.mark.django_db

PROFILES = ProductProfile._meta.db_table
LISTS = StoredList._meta.db_table


@pytest.fixture
def shop():
    kitchen = make_category(slug="kitchen")
    products = {name: make_product(name, category=kitchen) for name in ("Pan", "Pot", "Wok", "Kettle", "Ladle")}
    catalog.sync_products()
    active = RecommendationSet.objects.create(status=RecommendationSet.Status.ACTIVE, activated_at=timezone.now())
    shoppers = [f"v:{uuid.uuid4().hex}" for _ in range(4)]
    StoredList.objects.bulk_create(
        StoredList(
            recommendation_set=active,
            placement="for_you",
            subject=shopper,
            items=[[str(p.pk), 1.0 - k / 10, "for_you"] for k, p in enumerate(products.values())],
        )
        for shopper in shoppers
    )
    serving.forget_active_set()
    serving.recommend("for_you", shopper=shoppers[-1])  # the first page of a process starts the version counter
    return products, shoppers


def built(shopper: str) -> tuple[list[str], list[str]]:
    """The block's product ids, built afresh (as after one of the shopper's events), and the profile queries."""
    serving.touch_shoppers([shopper])
    with CaptureQueriesContext(connection) as queries:
        block = serving.recommend("for_you", shopper=shopper, limit=5)
    return [item.product_id for item in block.items], [q["sql"] for q in queries if PROFILES in q["sql"]]


def asks_for(sql: str, product: Product) -> bool:
    return f"'{product.pk}'" in sql


def test_a_block_built_after_another_reads_no_profiles(shop):
    _, (first, second, *_) = shop
    shown, reads = built(first)
    assert len(shown) == 5 and reads  # this process had read none of them yet
    shown_again, reads_again = built(second)
    assert shown_again == shown
    assert reads_again == []


def test_a_host_product_that_sells_out_leaves_the_next_block_and_only_it_is_read_again(
    shop, django_capture_on_commit_callbacks
):
    products, (first, second, *_) = shop
    built(first)
    with django_capture_on_commit_callbacks(execute=True):  # the profile sync runs when the save commits
        pan = Product.objects.get(pk=products["Pan"].pk)
        pan.stock = 0
        pan.save()
    shown, reads = built(second)
    assert str(pan.pk) not in shown and len(shown) == 4
    assert len(reads) == 1 and asks_for(reads[0], pan)
    assert not any(asks_for(reads[0], products[name]) for name in ("Pot", "Wok", "Kettle", "Ladle"))


def test_a_full_sync_and_a_deleted_product_are_seen_on_the_next_block(shop, django_capture_on_commit_callbacks):
    products, (first, second, third, _) = shop
    built(first)
    Product.objects.filter(pk=products["Wok"].pk).update(stock=0, price="99.00")  # no signal: a sync must follow
    catalog.sync_products()
    assert str(products["Wok"].pk) not in built(second)[0]
    kettle = str(products["Kettle"].pk)
    with django_capture_on_commit_callbacks(execute=True):
        products["Kettle"].delete()
    assert ProductProfile.objects.get(product_id=kettle).active is False
    shown, _ = built(third)
    assert kettle not in shown and str(products["Pan"].pk) in shown


def test_a_profile_saved_in_the_admin_is_seen_on_the_next_block(shop):
    products, (first, second, *_) = shop
    built(first)
    profile = ProductProfile.objects.get(product_id=str(products["Ladle"].pk))
    profile.active = False
    profile.save()
    assert str(products["Ladle"].pk) not in built(second)[0]


def test_an_emptied_cache_drops_what_the_process_held(shop):
    products, (first, second, *_) = shop
    built(first)
    # Written around `catalog` (no note of the change), then the cache loses the counter: nothing held is trusted.
    ProductProfile.objects.filter(product_id=str(products["Pot"].pk)).update(in_stock=False)
    cache.clear()
    shown, reads = built(second)
    assert str(products["Pot"].pk) not in shown
    assert reads


def test_the_change_records_tell_what_changed_or_say_they_cannot():
    catalog.start_profiles_version()
    start = cache.get(catalog.PROFILES_VERSION_KEY)
    catalog.profiles_changed(["a", "b"])  # outside a transaction: noted once, at once
    catalog.profiles_changed(["c"])
    now = cache.get(catalog.PROFILES_VERSION_KEY)
    assert now == start + 2
    assert catalog.profile_changes(start, now) == {"a", "b", "c"}
    assert catalog.profile_changes(start + 1, now) == {"c"}
    assert catalog.profile_changes(now, now) is None  # nothing to catch up from: the caller's version is current

    catalog.profiles_changed()  # any product
    assert catalog.profile_changes(start, start + 3) is None
    catalog.profiles_changed(str(k) for k in range(catalog.PROFILES_CHANGE_MAX_IDS + 1))  # too many to list
    assert catalog.profile_changes(start + 3, start + 4) is None
    cache.delete(f"{catalog.PROFILES_CHANGE_KEY}{start + 1}")  # expired
    assert catalog.profile_changes(start, start + 2) is None
    assert catalog.profile_changes(start, start + catalog.PROFILES_CHANGE_CATCH_UP + 1) is None  # too far behind


# -- a set's lists -------------------------------------------------------------------------------------------------


def list_reads(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries if LISTS in q["sql"]]


def test_a_products_lists_are_read_once_per_set_and_another_set_is_served_at_once(shop):
    products, (first, second, third, _) = shop
    pan, pot, wok, kettle = (products[name] for name in ("Pan", "Pot", "Wok", "Kettle"))
    active = RecommendationSet.objects.get(status=RecommendationSet.Status.ACTIVE)
    StoredList.objects.create(
        recommendation_set=active, placement="similar", subject=str(pan.pk), items=[[str(pot.pk), 0.9, "also"]]
    )
    with CaptureQueriesContext(connection) as queries:
        shown = serving.recommend("similar", shopper=first, product_id=str(pan.pk), limit=1)
    assert [i.product_id for i in shown.items] == [str(pot.pk)] and list_reads(queries)
    with CaptureQueriesContext(connection) as queries:
        again = serving.recommend("similar", shopper=second, product_id=str(pan.pk), limit=1)
    assert [i.product_id for i in again.items] == [str(pot.pk)] and list_reads(queries) == []

    newer = RecommendationSet.objects.create(status=RecommendationSet.Status.RETIRED)  # rolled back to, say
    StoredList.objects.create(
        recommendation_set=newer, placement="similar", subject=str(pan.pk), items=[[str(wok.pk), 0.8, "also"]]
    )
    activate_set(newer.pk)
    got = serving.recommend("similar", shopper=third, product_id=str(pan.pk), limit=1)
    assert [i.product_id for i in got.items] == [str(wok.pk)]
    assert str(kettle.pk) not in [i.product_id for i in got.items]


def test_a_shoppers_refreshed_for_you_list_is_served_on_their_next_block(shop):
    products, (first, *_) = shop
    assert built(first)[0][0] == str(products["Pan"].pk)
    # What refresh does after the shopper's events: their list in the active set, rewritten in place.
    StoredList.objects.filter(placement="for_you", subject=first).update(
        items=[[str(products["Ladle"].pk), 1.0, "for_you"], [str(products["Wok"].pk), 0.5, "for_you"]]
    )
    assert built(first)[0][:2] == [str(products["Ladle"].pk), str(products["Wok"].pk)]
