"""A batch of blocks read together (a sender composing e-mails): the same blocks as one by one, in a few statements.

`serving.read_ahead_many` reads many shoppers' newest events, for_you lists and first candidates' profiles at once;
`recommend(preview=True)` then reads neither the block cache nor the database per shopper; `attach_products_many`
loads the host's products for all blocks in one read, or (lazy) only when a template first asks for one.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from recommendations import catalog, serving, serving_sql, tracking
from recommendations.models import ProductProfile
from shop.models import Product
from tests.factories import active_lists, make_category, make_product

pytestmark = pytest.mark.django_db

SHOPPERS = 12


@pytest.fixture
def batch_shop():
    """40 products in 4 categories; 12 shoppers with a for_you list of their own (reasons naming a product), a few
    events each (a cart, a purchase, a recent view); one shopper with no list and no events."""
    categories = [make_category(slug=f"batch-{n}") for n in range(4)]
    products = [make_product(f"Item {n}", category=categories[n % 4]) for n in range(40)]
    catalog.sync_products()
    shoppers = [f"v:{uuid.uuid4().hex}" for _ in range(SHOPPERS)]
    lists = {}
    now = timezone.now()
    events = []
    for s, shopper in enumerate(shoppers[:-1]):
        mine = [products[(s * 3 + k) % 40] for k in range(14)]
        anchor = products[(s + 20) % 40]
        lists[shopper] = [(p, 1.0 - k / 20, f"because:{anchor.pk}") for k, p in enumerate(mine)]
        visitor = shopper[2:]
        events += [
            tracking.build_event("add_to_cart", visitor_id=visitor, product_id=str(mine[0].pk), occurred_at=now),
            tracking.build_event(
                "purchase", visitor_id=visitor, product_id=str(mine[1].pk), occurred_at=now - timedelta(days=3)
            ),
            tracking.build_event(
                "view", visitor_id=visitor, product_id=str(mine[2].pk), occurred_at=now - timedelta(minutes=2)
            ),
        ]
    tracking.insert_events(events)
    active_lists(for_you=lists)
    return products, shoppers


def blocks_of(shoppers: list[str], *, batched: bool) -> tuple[list[serving.Block], int]:
    """Each shopper's for_you preview, built in one pass; with the batch read first when `batched`. Also the number
    of statements the loop of `recommend` calls sent."""
    with serving.render_pass():
        if batched:
            serving.read_ahead_many("for_you", shoppers, limit=6)
        with CaptureQueriesContext(connection) as queries:
            blocks = [serving.recommend("for_you", shopper=s, limit=6, preview=True) for s in shoppers]
    return blocks, len(queries.captured_queries)


def test_batched_blocks_are_the_blocks_built_one_by_one_and_send_no_statement_each(batch_shop):
    _products, shoppers = batch_shop
    one_by_one, statements_alone = blocks_of(shoppers, batched=False)
    batched, statements_batched = blocks_of(shoppers, batched=True)
    assert [[(i.product_id, i.reason_text, i.source) for i in b.items] for b in batched] == [
        [(i.product_id, i.reason_text, i.source) for i in b.items] for b in one_by_one
    ]
    # The cart and the purchase are left out for every shopper either way: the events were read for the batch.
    assert all(b.items for b in batched)
    assert statements_alone >= len(shoppers)  # each shopper's events and list, one statement at least
    if serving_sql.usable(ProductProfile) is not None:
        assert statements_batched == 0


def test_the_batched_events_are_each_shoppers_newest_as_read_alone(batch_shop):
    if connection.vendor != "postgresql":
        pytest.skip("the batched read is PostgreSQL's")
    _products, shoppers = batch_shop
    many = serving_sql.newest_events_many(connection, shoppers, 2)
    for shopper in shoppers:
        assert many.get(shopper, []) == serving_sql.newest_events(connection, shopper, 2)
    assert shoppers[-1] not in many  # no events: absent, not an empty list of someone else's


def test_outside_a_render_pass_or_for_an_unknown_placement_nothing_is_read(batch_shop):
    _products, shoppers = batch_shop
    with CaptureQueriesContext(connection) as queries:
        serving.read_ahead_many("for_you", shoppers)
        with serving.render_pass():
            serving.read_ahead_many("no_such_placement", shoppers)
    assert queries.captured_queries == []


def test_lazy_products_drop_what_the_host_deleted_and_load_together_when_first_read(batch_shop):
    _products, shoppers = batch_shop
    blocks, _ = blocks_of(shoppers[:3], batched=True)
    gone = blocks[0].items[0].product_id
    Product.objects.filter(pk=gone).delete()  # behind the app's back: the profile still says active
    with CaptureQueriesContext(connection) as queries:
        serving.attach_products_many(blocks, lazy=True)
    assert len(queries.captured_queries) <= 2  # the ids the host still has (and profiles not held), no objects
    assert gone not in [i.product_id for b in blocks for i in b.items]
    first, other = blocks[0].items[0], blocks[2].items[-1]
    with CaptureQueriesContext(connection) as queries:
        assert first.product.pk == int(first.product_id)  # the first read loads every block's products
        assert other.product.name == other.name
    assert len(queries.captured_queries) == 1
    assert first.name and first.price is not None  # the profile's fields are there without loading anything


def test_host_product_ids_answer_what_get_products_finds(batch_shop):
    products, _ = batch_shop
    asked = [str(products[0].pk), str(products[5].pk), "999999", "not-a-number"]
    assert catalog.host_product_ids(asked) == set(catalog.get_products(asked)) == {asked[0], asked[1]}
