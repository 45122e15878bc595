"""Rules as serving reads them: cached reads flushed on save, windows, priority, audiences, sources, merchandising."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from recommendations import catalog, tracking, tunables
from recommendations.lists import store
from recommendations.models import ColdStartRule, MerchandisingRule, Placement, ProductProfile
from tests.factories import make_brand, make_category, make_product, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    kitchen, garden = make_category("Kitchen", slug="kitchen"), make_category("Garden", slug="garden")
    acme, leaf = make_brand("Acme"), make_brand("Leaf")
    p = {
        "pan": make_product("Pan", category=kitchen, brand=acme, price=Decimal("30.00")),
        "pot": make_product("Pot", category=kitchen, brand=acme, price=Decimal("12.00")),
        "rake": make_product("Rake", category=garden, brand=leaf, price=Decimal("25.00")),
        "hoe": make_product("Hoe", category=garden, brand=leaf, price=Decimal("8.00")),
    }
    catalog.sync_products()
    return {k: str(v.pk) for k, v in p.items()}


def rule(**fields) -> ColdStartRule:
    fields.setdefault("name", "rule")
    return ColdStartRule.objects.create(**fields)


def test_a_saved_rule_takes_effect_at_once_and_a_deleted_one_stops(shop):
    audience = tunables.Audience(shopper="v:x")
    assert tunables.matching_rule("for_you", audience) is None  # cached: no rules
    r = rule(audience=ColdStartRule.Audience.ANONYMOUS)
    assert tunables.matching_rule("for_you", audience)["id"] == r.pk
    r.delete()
    assert tunables.matching_rule("for_you", audience) is None


def test_priority_placements_and_windows(shop):
    now = timezone.now()
    low = rule(name="low", priority=1)
    rule(name="high but elsewhere", priority=9, placements=["similar"])
    rule(name="high but over", priority=8, ends_at=now - timedelta(hours=1))
    rule(name="high but later", priority=7, starts_at=now + timedelta(hours=1))
    rule(name="high but off", priority=6, active=False)
    audience = tunables.Audience(shopper="v:x")
    assert tunables.matching_rule("for_you", audience)["id"] == low.pk
    assert tunables.matching_rule("similar", audience)["name"] == "high but elsewhere"
    assert tunables.matching_rule("for_you", audience, now=now + timedelta(hours=2))["name"] == "high but later"


@pytest.mark.parametrize(
    ("audience_fields", "matching", "other"),
    [
        ({"audience": "anonymous"}, {"shopper": "v:x"}, {"shopper": "u:1"}),
        ({"audience": "few_events", "audience_number": 3}, {"n_events": 2}, {"n_events": 3}),
        ({"audience": "no_purchases"}, {"n_purchases": 0}, {"n_purchases": 1}),
        ({"audience": "category", "audience_value": "garden"}, {"category": "garden"}, {"category": "kitchen"}),
        ({"audience": "campaign", "audience_value": "spring"}, {"campaign": "spring"}, {"campaign": ""}),
    ],
)
def test_each_audience_matches_its_shoppers_and_leaves_others_alone(shop, audience_fields, matching, other):
    rule(**audience_fields)
    assert tunables.matching_rule("for_you", tunables.Audience(**{"shopper": "v:x", **matching})) is not None
    assert tunables.matching_rule("for_you", tunables.Audience(**{"shopper": "v:x", **other})) is None


def test_new_accounts_are_told_by_their_join_date(shop):
    rule(audience="new_account", audience_number=7)
    fresh, old = make_user(), make_user()
    old.date_joined = timezone.now() - timedelta(days=30)
    old.save()
    assert tunables.matching_rule("for_you", tunables.Audience(shopper=f"u:{fresh.pk}")) is not None
    assert tunables.matching_rule("for_you", tunables.Audience(shopper=f"u:{old.pk}")) is None
    assert tunables.matching_rule("for_you", tunables.Audience(shopper="v:x")) is None


def ids(candidates):
    return [c[0] for c in candidates]


def test_sources_yield_what_they_say(shop):
    ProductProfile.objects.filter(product_id=shop["rake"]).update(sales_count=9)
    ProductProfile.objects.filter(product_id=shop["hoe"]).update(sales_count=3)
    picked = rule(source="hand_picked", products=[shop["hoe"], "nope", shop["pan"]])
    assert ids(tunables.rule_candidates(tunables.matching_rule("for_you", tunables.Audience()), "", 8)) == [
        shop["hoe"],
        shop["pan"],
    ]
    picked.delete()
    brand = rule(source="brand", source_value="Leaf")
    assert ids(tunables.rule_candidates(tunables.matching_rule("for_you", tunables.Audience()), "", 8)) == [
        shop["rake"],
        shop["hoe"],
    ]
    brand.delete()
    band = rule(source="price_band", price_min=Decimal("10"), price_max=Decimal("26"))
    assert set(ids(tunables.rule_candidates(tunables.matching_rule("for_you", tunables.Audience()), "", 8))) == {
        shop["rake"],
        shop["pot"],
    }
    band.delete()
    in_category = rule(source="trending_category")
    got = tunables.rule_candidates(tunables.matching_rule("for_you", tunables.Audience()), "garden", 8)
    assert ids(got) == [shop["rake"], shop["hoe"]]
    assert got[0][2] == "trending:garden"
    in_category.delete()


def test_top_sellers_count_purchases_in_the_window_only(shop):
    now = timezone.now()
    events = [
        tracking.build_event("purchase", visitor_id="a" * 32, product_id=shop["pot"], quantity=3, occurred_at=now),
        tracking.build_event("purchase", visitor_id="b" * 32, product_id=shop["pan"], quantity=1, occurred_at=now),
        tracking.build_event(
            "purchase", visitor_id="c" * 32, product_id=shop["rake"], quantity=9, occurred_at=now - timedelta(days=40)
        ),
    ]
    tracking.insert_events(events)
    rule(source="top_sellers", source_days=30)
    got = tunables.rule_candidates(tunables.matching_rule("for_you", tunables.Audience()), "", 8)
    assert ids(got) == [shop["pot"], shop["pan"]]


def test_newest_arrivals_newest_first(shop):
    now = timezone.now()
    for age, key in [(1, "hoe"), (2, "pot"), (40, "pan"), (60, "rake")]:
        ProductProfile.objects.filter(product_id=shop[key]).update(created_at=now - timedelta(days=age))
    rule(source="newest", source_days=14)
    got = tunables.rule_candidates(tunables.matching_rule("for_you", tunables.Audience()), "", 8)
    assert ids(got) == [shop["hoe"], shop["pot"]]


def profiles(shop):
    rows = ProductProfile.objects.values_list("product_id", "category", "brand", "active", "in_stock", "name", "price")
    return {row[0]: store.Profile._make(row[1:]) for row in rows}  # as serving reads them


def test_merchandising_boosts_buries_excludes_and_pins(shop):
    order = [shop["pan"], shop["pot"], shop["rake"], shop["hoe"]]
    candidates = [(pid, 4.0 - i, "for_you", "stored") for i, pid in enumerate(order)]
    MerchandisingRule.objects.create(name="bury acme", action="bury", target="brand", target_value="Acme", strength=10)
    MerchandisingRule.objects.create(name="no cheap", action="exclude", target="price_band", price_max=Decimal("9"))
    MerchandisingRule.objects.create(
        name="pin pot", action="pin", target="product", target_value=shop["pot"], position=1
    )
    MerchandisingRule.objects.create(
        name="elsewhere", action="exclude", target="category", target_value="garden", placements=["similar"]
    )
    live = tunables.live_merchandising("for_you")
    ranked, pins, notes = tunables.apply_merchandising(candidates, live, profiles(shop))
    assert ids(ranked) == [shop["rake"], shop["pan"], shop["pot"]]
    assert pins == {1: shop["pot"]}
    assert notes[shop["pan"]] == ["bury acme"]
    assert "no cheap" in notes[shop["hoe"]]
    live = tunables.live_merchandising("similar")
    assert [r["name"] for r in live] == ["bury acme", "no cheap", "pin pot", "elsewhere"]


def test_a_product_pin_holds_when_the_model_has_no_candidates(shop):
    """A new visitor's block is all fallback; the pin must not depend on the model having ranked anything."""
    MerchandisingRule.objects.create(
        name="pin hoe", action="pin", target="product", target_value=shop["hoe"], position=2
    )
    ranked, pins, notes = tunables.apply_merchandising([], tunables.live_merchandising("for_you"), {})
    assert (ranked, pins, notes) == ([], {2: shop["hoe"]}, {shop["hoe"]: ["pin hoe"]})


def test_placement_rows_are_cached_and_flushed_on_save(shop):
    before = tunables.placement_rows()
    assert before["for_you"]["size"] == 8  # seeded by the migration from the settings
    Placement.objects.filter(name="for_you").update(size=5)  # a queryset update sends no signal: still cached
    assert tunables.placement_rows()["for_you"]["size"] == 8
    row = Placement.objects.get(name="for_you")
    row.size = 4
    row.save()
    assert tunables.placement_rows()["for_you"]["size"] == 4


def test_exploration_spreads_slots_and_rotates_new_products(shop):
    assert tunables.exploration_slots(8, 0.25) == [3, 7]
    assert tunables.exploration_slots(8, 0) == []
    assert 0 not in tunables.exploration_slots(4, 0.5)
    now = timezone.now()
    ProductProfile.objects.update(created_at=now - timedelta(days=2))
    tracking.insert_events([tracking.build_event("view", visitor_id="a" * 32, product_id=shop["pan"])])
    pool = tunables.exploration_pool(14)
    assert set(pool) == {shop["pot"], shop["rake"], shop["hoe"]}, "a product with events is not new any more"
    picks = {tuple(tunables.rotate(pool, f"v:{n}", 1)) for n in range(30)}
    assert len(picks) == 3, "different shoppers see different new products"
