"""generate_demo_data fills the analytics of the days it generated, and attributes conversions only to a click before
them.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from recommendations import analytics
from recommendations.models import Event, PlacementDay

pytestmark = pytest.mark.django_db


NOW = "2024-06-01T12:00:00Z"


SMALL = ["--users", "40", "--products", "40", "--days", "20", "--now", NOW, "--seed", "3", "--no-progress"]


def test_generate_demo_data_fills_the_analytics_of_the_days_it_generated():
    out = io.StringIO()
    call_command("generate_demo_data", *SMALL, stdout=out)

    rows = PlacementDay.objects.all()
    assert rows.exists(), "the analytics page would be empty until someone pressed Refresh now"
    assert {"for_you", "trending", "similar"} <= set(rows.values_list("placement", flat=True))
    days = set(rows.values_list("day", flat=True))
    assert min(days) >= timezone.datetime(2024, 5, 12).date() and max(days) <= timezone.datetime(2024, 6, 1).date()
    assert len(days) > 10  # spread over the period, not one day
    # The rows are what a rebuild of the events says, not made up: the same sums as a fresh rollup.
    sums = rows.aggregate(i=Sum("impressions"), c=Sum("clicks"), a=Sum("add_to_carts"), o=Sum("orders"))
    assert sums["i"] == Event.objects.filter(event_type="impression").exclude(placement="").count() > 0
    assert sums["c"] == Event.objects.filter(event_type="click").exclude(placement="").count() > 0
    assert 0 < sums["o"] <= sums["a"] <= sums["c"] * 3
    assert "placement-day rows" in out.getvalue()
    _per_placement, grand = analytics.totals(min(days), max(days))
    assert grand.impressions == sums["i"] and grand.ctr is not None and 0 < grand.ctr < 1


def test_demo_conversions_are_attributed_only_to_a_click_before_them():
    call_command("generate_demo_data", *SMALL, stdout=io.StringIO())
    attributed = Event.objects.filter(event_type__in=("add_to_cart", "purchase")).exclude(recommendation_id="")
    assert attributed.exists()
    for event in attributed[:200]:
        click = Event.objects.filter(
            event_type="click",
            shopper=event.shopper,
            product_id=event.product_id,
            recommendation_id=event.recommendation_id,
            placement=event.placement,
            occurred_at__lte=event.occurred_at,
        )
        assert click.exists(), event
        impression = Event.objects.get(event_type="impression", recommendation_id=event.recommendation_id)
        assert event.product_id in impression.context["items"]
        assert event.context.get("attributed") == "click"
