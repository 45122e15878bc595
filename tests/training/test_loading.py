"""Training and precompute skip, and report, stored rows whose time cannot be read. Real PostgreSQL."""

from __future__ import annotations

import io
import logging

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from recommendations.lists.refresh import refresh_shopper
from recommendations.models import Event, PrecomputeRun, ProductProfile, TrainingRun
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import T_END, write_shop

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"),
]


FAST = ["popularity", "item_knn"]


@pytest.fixture
def shop():
    data, features = make_shop(n_shoppers=200, n_items=80, seed=1)
    write_shop(data, features)
    return data, features


def store_unreadable_rows() -> str:
    """A view and a purchase at 1 BC and a view in the year 10000, as raw SQL can store them; returns the shopper."""
    shopper = Event.objects.filter(event_type="view").values_list("shopper", flat=True).first()
    product = ProductProfile.objects.values_list("product_id", flat=True).first()
    for event_id, event_type in (("bc-view", "view"), ("bc-buy", "purchase"), ("far-view", "view")):
        Event.objects.create(event_id=event_id, event_type=event_type, shopper=shopper, product_id=product)
    table = connection.ops.quote_name(Event._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET occurred_at = '0001-12-31 19:00:00+00 BC', client_time = '0001-12-31 19:00:00+00 BC' "
            "WHERE event_id IN ('bc-view', 'bc-buy')"
        )
        cursor.execute(f"UPDATE {table} SET occurred_at = '10000-01-01 00:00:00+00' WHERE event_id = 'far-view'")
    with pytest.raises(ValueError, match="out of range"):  # what stopped every run before
        list(Event.objects.filter(event_id="bc-view").values_list("occurred_at", flat=True))
    return shopper


def test_training_and_precompute_skip_and_report_rows_whose_time_cannot_be_read(shop, caplog):
    shopper = store_unreadable_rows()
    caplog.set_level(logging.WARNING)

    run = training.run_training(candidates=FAST)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.data_stats["cleaning"]["unreadable_time_skipped"] == 3
    assert run.data_until == T_END  # the year 10000 row did not become "the newest event"
    assert "training leaves out 3 events" in caplog.text

    out = io.StringIO()
    call_command("precompute_recommendations", "--no-progress", stdout=out)
    precompute = PrecomputeRun.objects.order_by("-pk").first()  # training queued one too, never run here
    assert precompute.status == PrecomputeRun.Status.SUCCEEDED, precompute.error
    assert precompute.stats["unreadable_events_skipped"] == 3
    assert "3 events were left out" in precompute.error
    assert "warning: 3 events were left out" in out.getvalue()
    assert precompute.stats["lists"]["for_you"] > 0

    # The near-real-time refresh of the shopper who owns the rows reads them too.
    assert refresh_shopper(shopper) > 0
