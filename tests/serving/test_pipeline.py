"""The serving pipeline: candidates → session re-rank → filters → diversity → fallback → reasons, and its feedback.

Stored lists are written straight into an active RecommendationSet, so each test states exactly what the engine
precomputed and checks what serving makes of it.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from recommendations import catalog, experiments, serving, tracking
from recommendations.conf import rec_settings
from recommendations.experiments import operations
from recommendations.models import (
    ColdStartRule,
    Event,
    Experiment,
    ExperimentVariant,
    MerchandisingRule,
    Placement,
    ProductProfile,
)
from recommendations.serving import pipeline
from tests.factories import (
    active_lists,
    block_html,
    make_product,
    make_small_shop,
    make_user,
    render,
    rendered_ids,
    visitor,
)

pytestmark = pytest.mark.django_db


def ids(block: serving.Block) -> list[str]:
    return [item.product_id for item in block.items]


def store(shopper_visitor: str, event_type: str, product, minutes_ago: float = 0.0, **fields) -> None:
    when = timezone.now() - timedelta(minutes=minutes_ago)
    event = tracking.build_event(
        event_type, visitor_id=shopper_visitor, product_id=str(product.pk), occurred_at=when, **fields
    )
    tracking.insert_events([event])
    tracking.on_events_stored([event])


@pytest.fixture
def shop():
    return make_small_shop()


# -- the session ----------------------------------------------------------------------------------------------


def test_a_view_a_moment_ago_moves_for_you_to_its_category_without_any_recompute(shop):
    tune("for_you", fallback=["trending"])  # a visitor with no events yet sees trending here (the default: popular)
    active_lists(
        similar={str(shop["Rake"].pk): [(shop["Hoe"], 0.9, "also"), (shop["Hose"], 0.5, "also")]},
        trending={
            "": [(shop["Pan"], 9, "trending"), (shop["Pot"], 8, "trending"), (shop["Wok"], 7, "trending")],
            "category:garden": [(shop["Shears"], 3, "trending"), (shop["Hose"], 2, "trending")],
        },
    )
    v = visitor()
    before = serving.recommend("for_you", shopper=f"v:{v}", limit=3)
    assert ids(before)[:3] == [str(shop[n].pk) for n in ("Pan", "Pot", "Wok")]

    store(v, "view", shop["Rake"])
    after = serving.recommend("for_you", shopper=f"v:{v}", limit=3)
    assert ids(after) == [str(shop[n].pk) for n in ("Hoe", "Hose", "Shears")]
    assert {i.source for i in after.items} == {"session"}
    assert all(i.reason_text == "Because you looked at Rake" for i in after.items)
    assert str(shop["Rake"].pk) not in ids(after), "the product just viewed is not recommended back"


def test_an_old_view_leaves_the_stored_list_in_charge(shop):
    v = visitor()
    active_lists(
        for_you={f"v:{v}": [(shop["Pan"], 3.0, f"because:{shop['Kettle'].pk}"), (shop["Pot"], 2.0, "for_you")]}
    )
    store(v, "view", shop["Rake"], minutes_ago=rec_settings.SESSION_MINUTES + 5)
    block = serving.recommend("for_you", shopper=f"v:{v}", limit=2)
    assert ids(block) == [str(shop["Pan"].pk), str(shop["Pot"].pk)]
    assert block.items[0].reason_text == "Because you looked at Kettle"
    assert block.source == "stored"


def test_the_session_blends_with_the_stored_list_rather_than_replacing_it(shop):
    v = visitor()
    active_lists(
        for_you={f"v:{v}": [(shop["Pan"], 3.0, "for_you"), (shop["Pot"], 2.0, "for_you"), (shop["Wok"], 1, "for_you")]},
        similar={str(shop["Rake"].pk): [(shop["Hoe"], 1.0, "also")]},
    )
    store(v, "view", shop["Rake"])
    got = ids(serving.recommend("for_you", shopper=f"v:{v}", limit=4))
    assert got[0] == str(shop["Hoe"].pk)
    assert got[1:3] == [str(shop["Pan"].pk), str(shop["Pot"].pk)]


# -- filters ------------------------------------------------------------------------------------------------------


def test_filters_drop_unservable_current_in_cart_and_bought_products(shop):
    v = visitor()
    ranked = [(shop[n], 10 - i, "for_you") for i, n in enumerate(["Pan", "Pot", "Wok", "Kettle", "Rake", "Hoe"])]
    active_lists(for_you={f"v:{v}": ranked})
    ProductProfile.objects.filter(product_id=str(shop["Pan"].pk)).update(in_stock=False)
    ProductProfile.objects.filter(product_id=str(shop["Pot"].pk)).update(active=False)
    store(v, "add_to_cart", shop["Wok"], minutes_ago=60)
    store(v, "purchase", shop["Kettle"], minutes_ago=60 * 24)
    block = serving.recommend("for_you", shopper=f"v:{v}", product_id=str(shop["Rake"].pk), limit=8)
    got = ids(block)
    for name in ("Pan", "Pot", "Wok", "Kettle", "Rake"):
        assert str(shop[name].pk) not in got, name
    assert got[0] == str(shop["Hoe"].pk)


def test_a_removed_or_bought_cart_item_is_no_longer_in_the_cart(shop):
    v = visitor()
    store(v, "add_to_cart", shop["Wok"], minutes_ago=30)
    store(v, "remove_from_cart", shop["Wok"], minutes_ago=20)
    store(v, "add_to_cart", shop["Pan"], minutes_ago=10)
    assert serving.shopper_state(f"v:{v}").cart == {str(shop["Pan"].pk)}


def test_bought_products_come_back_only_where_the_placement_allows(shop):
    v = visitor()
    active_lists(trending={"": [(shop["Pan"], 9, "trending"), (shop["Pot"], 8, "trending")]})
    store(v, "purchase", shop["Pan"], minutes_ago=300)
    assert str(shop["Pan"].pk) not in ids(serving.recommend("for_you", shopper=f"v:{v}"))
    assert ids(serving.recommend("trending", shopper=f"v:{v}"))[0] == str(shop["Pan"].pk)


# -- diversity and fill -------------------------------------------------------------------------------------------


def tune(name: str, **fields) -> None:
    """Change a placement as staff do in the admin (its row overrides the settings)."""
    row = Placement.objects.get(name=name)
    for key, value in fields.items():
        setattr(row, key, value)
    row.save()


def test_the_diversity_cap_spreads_a_block_over_categories_and_brands(shop):
    tune("for_you", max_per_category=2, max_per_brand=0)
    v = visitor()
    ranked = [(shop[n], 10 - i, "for_you") for i, n in enumerate(["Pan", "Pot", "Wok", "Kettle", "Rake", "Hoe"])]
    active_lists(for_you={f"v:{v}": ranked})
    got = ids(serving.recommend("for_you", shopper=f"v:{v}", limit=4))
    assert got == [str(shop[n].pk) for n in ("Pan", "Pot", "Rake", "Hoe")]


def test_a_cap_that_would_leave_the_block_short_gives_way(shop):
    tune("for_you", max_per_brand=1, max_per_category=0, fallback=[])
    v = visitor()
    active_lists(for_you={f"v:{v}": [(shop[n], 3 - i, "for_you") for i, n in enumerate(["Pan", "Pot", "Wok"])]})
    assert ids(serving.recommend("for_you", shopper=f"v:{v}", limit=3)) == [
        str(shop[n].pk) for n in ("Pan", "Pot", "Wok")
    ]


def test_a_block_is_never_short_while_the_catalog_has_products(shop):
    # No precompute at all: the chain ends in best sellers.
    block = serving.recommend("similar", product_id=str(shop["Pan"].pk), limit=7)
    assert len(block.items) == 7
    assert str(shop["Pan"].pk) not in ids(block)
    assert ids(block)[:3] == [str(shop[n].pk) for n in ("Pot", "Wok", "Kettle")], "its own category first"
    assert block.items[0].reason_text == "Trending in Kitchen"
    assert block.source == "fallback"
    assert all(item.reason_text for item in block.items)


def test_personal_history_surfaces_render_nothing_rather_than_pretend(shop):
    v = visitor()
    assert serving.recommend("recently_viewed", shopper=f"v:{v}").items == []
    assert serving.recommend("buy_again", shopper=f"v:{v}").items == []


# -- the six surfaces ---------------------------------------------------------------------------------------------


def test_recently_viewed_is_newest_first_distinct_and_skips_the_page_product(shop):
    v = visitor()
    for minutes, name in [(50, "Pan"), (40, "Rake"), (30, "Pan"), (20, "Hoe"), (10, "Pot")]:
        store(v, "view", shop[name], minutes_ago=minutes)
    block = serving.recommend("recently_viewed", shopper=f"v:{v}", product_id=str(shop["Pot"].pk))
    assert ids(block) == [str(shop[n].pk) for n in ("Hoe", "Pan", "Rake")]
    assert {i.reason_text for i in block.items} == {"You viewed this"}


def test_buy_again_lists_repeat_products_the_shopper_bought_the_most_due_first(shop):
    active_lists(buy_again={"": [(shop["Pan"], 0.8, "repeat", 30.0), (shop["Pot"], 0.8, "repeat", 30.0)]})
    v = visitor()
    store(v, "purchase", shop["Pan"], minutes_ago=60 * 24 * 40)  # 40 days ago: due
    store(v, "purchase", shop["Pot"], minutes_ago=60 * 24 * 2)  # 2 days ago: not yet
    store(v, "purchase", shop["Rake"], minutes_ago=60 * 24 * 10)  # a one-off nobody re-buys
    store(v, "purchase", shop["Hoe"], minutes_ago=60 * 24 * 20)  # bought twice by this shopper
    store(v, "purchase", shop["Hoe"], minutes_ago=60 * 24 * 5)
    block = serving.recommend("buy_again", shopper=f"v:{v}")
    assert ids(block)[0] == str(shop["Pan"].pk)
    assert set(ids(block)) == {str(shop[n].pk) for n in ("Pan", "Pot", "Hoe")}
    assert block.items[0].reason_text == "You bought this before"


def test_bought_together_for_a_product_and_for_a_whole_cart(shop):
    active_lists(
        bought_together={
            str(shop["Pan"].pk): [(shop["Kettle"], 0.9, f"together:{shop['Pan'].pk}")],
            str(shop["Rake"].pk): [(shop["Hose"], 0.8, f"together:{shop['Rake'].pk}")],
        }
    )
    on_page = serving.recommend("bought_together", product_id=str(shop["Pan"].pk), limit=1)
    assert ids(on_page) == [str(shop["Kettle"].pk)]
    assert on_page.items[0].reason_text == "Bought together with Pan"
    cart = serving.recommend("bought_together", cart=[str(shop["Pan"].pk), str(shop["Rake"].pk)], limit=2)
    assert ids(cart) == [str(shop["Kettle"].pk), str(shop["Hose"].pk)]


def test_trending_in_a_category_and_shop_wide(shop):
    active_lists(
        trending={
            "": [(shop["Pan"], 9, "trending")],
            "category:garden": [(shop["Hose"], 3, "trending"), (shop["Hoe"], 2, "trending")],
        }
    )
    garden = serving.recommend("trending", category="garden", limit=2)
    assert ids(garden) == [str(shop["Hose"].pk), str(shop["Hoe"].pk)]
    assert garden.items[0].reason_text == "Trending in Garden"
    assert serving.recommend("trending", limit=1).items[0].reason_text == "Trending now"


def test_an_unknown_placement_is_refused(shop):
    with pytest.raises(serving.UnknownPlacement):
        serving.recommend("nope")


# -- budget, errors, cache ----------------------------------------------------------------------------------------


def test_past_its_time_budget_a_block_fills_from_the_shared_lists(shop, settings, caplog):
    tune("for_you", fallback=["trending"])
    v = visitor()
    active_lists(for_you={f"v:{v}": [(shop["Kettle"], 1.0, "for_you")]}, trending={"": [(shop["Rake"], 9, "trending")]})
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SERVING_BUDGET_MS": 0}
    with caplog.at_level(logging.WARNING, logger="recommendations"):
        block = serving.recommend("for_you", shopper=f"v:{v}", limit=1)
    assert ids(block) == [str(shop["Rake"].pk)]
    assert block.source == "fallback"
    assert any("budget" in r.getMessage() for r in caplog.records)


def test_one_shoppers_cached_block_is_never_served_to_another(shop):
    a, b = visitor(), visitor()
    active_lists(for_you={f"v:{a}": [(shop["Pan"], 1.0, "for_you")], f"v:{b}": [(shop["Rake"], 1.0, "for_you")]})
    for _ in range(2):  # the second round comes from the cache
        assert ids(serving.recommend("for_you", shopper=f"v:{a}", limit=1)) == [str(shop["Pan"].pk)]
        assert ids(serving.recommend("for_you", shopper=f"v:{b}", limit=1)) == [str(shop["Rake"].pk)]


def test_a_new_event_invalidates_the_shoppers_cached_block(shop):
    v = visitor()
    active_lists(
        for_you={f"v:{v}": [(shop["Pan"], 1.0, "for_you")]},
        similar={str(shop["Rake"].pk): [(shop["Hoe"], 1.0, "also")]},
    )
    assert ids(serving.recommend("for_you", shopper=f"v:{v}", limit=1)) == [str(shop["Pan"].pk)]
    store(v, "view", shop["Rake"])
    assert ids(serving.recommend("for_you", shopper=f"v:{v}", limit=1)) == [str(shop["Hoe"].pk)]


def test_a_failure_inside_is_answered_by_the_fallback(shop, caplog, monkeypatch):
    def unreadable(*args, **kwargs):
        raise RuntimeError("the stored lists cannot be read")

    monkeypatch.setattr(pipeline, "_build", unreadable)
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        block = serving.recommend("similar", product_id=str(shop["Pan"].pk), limit=3)
    assert len(block.items) == 3
    assert block.source == "fallback"
    assert any("similar failed" in r.getMessage() for r in caplog.records)


def test_a_product_id_the_database_refuses_is_answered_by_the_fallback(shop, caplog):
    """PostgreSQL refuses a NUL in a text parameter (SQLite, the demo's database, stores it and finds nothing):
    either way the block is the fallback's, never an error."""
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        block = serving.recommend("similar", product_id="bad\x00id", limit=3)
    assert len(block.items) == 3
    assert block.source == "fallback"
    if connection.vendor == "postgresql":
        assert any("similar failed" in r.getMessage() for r in caplog.records)


# -- the tag ------------------------------------------------------------------------------------------------------


def test_the_tag_renders_any_placement_and_a_project_template_overrides_one(shop, settings, tmp_path):
    (tmp_path / "recommendations" / "blocks").mkdir(parents=True)
    (tmp_path / "recommendations" / "blocks" / "trending.html").write_text(
        '<ol class="mine">{% for item in items %}<li data-rec-product="{{ item.product_id }}">'
        "{{ item.product.name }}</li>{% endfor %}</ol>"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}]
    request = RequestFactory().get("/")
    html = render('{% load recommendations %}{% recommendations "trending" limit=2 %}', request)
    assert html.startswith('<ol class="mine">') and len(rendered_ids(html)) == 2
    similar = render(
        '{% load recommendations %}{% recommendations "similar" product=p limit=3 %}', request, p=shop["Pan"]
    )
    assert 'data-rec-placement="similar"' in similar and len(rendered_ids(similar)) == 3


def test_the_tag_with_an_unknown_placement_renders_nothing_and_logs(shop, caplog):
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        html = render('{% load recommendations %}{% recommendations "nope" %}', RequestFactory().get("/"))
    assert html == ""
    assert any("nope" in r.getMessage() for r in caplog.records)


def test_a_reason_is_escaped(shop):
    ProductProfile.objects.filter(product_id=str(shop["Pan"].pk)).update(name="<b>Pan</b>")
    v = visitor()
    active_lists(for_you={f"v:{v}": [(shop["Pot"], 1.0, f"because:{shop['Pan'].pk}")]})
    request = RequestFactory().get("/")
    request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = v
    html = render('{% load recommendations %}{% recommendations "for_you" limit=1 %}', request)
    assert "Because you looked at &lt;b&gt;Pan&lt;/b&gt;" in html


# -- feedback: impressions and attribution ----------------------------------------------------------------------


def test_every_rendered_block_is_recorded_as_an_impression_after_the_response(shop):
    active_lists(trending={"": [(shop["Pan"], 9, "trending"), (shop["Rake"], 8, "trending")]})
    client = Client()
    html = client.get(reverse("home")).content.decode()
    blocks = re.findall(r'data-rec-placement="([^"]+)" data-rec-id="([^"]+)"', html)
    assert blocks, "the home page renders at least one block"
    impressions = Event.objects.filter(event_type="impression")
    assert sorted((e.placement, e.recommendation_id) for e in impressions) == sorted(blocks)
    for e in impressions:
        assert e.context["items"] == rendered_ids(block_html(html, e.placement))
        assert e.shopper.startswith("v:")


def test_an_add_to_cart_and_a_purchase_after_a_click_are_attributed_to_the_block(shop):
    user = make_user()
    client = Client()
    client.force_login(user)
    rec_id = uuid.uuid4().hex
    click = {
        "event_id": uuid.uuid4().hex,
        "event_type": "click",
        "product_id": str(shop["Pan"].pk),
        "placement": "similar",
        "recommendation_id": rec_id,
    }
    response = client.post(reverse("recommendations:ingest"), json.dumps({"events": [click]}), "application/json")
    assert response.status_code == 200, response.content
    client.post(reverse("cart_add", args=[shop["Pan"].pk]), {"quantity": 1})
    client.post(reverse("cart_add", args=[shop["Rake"].pk]), {"quantity": 1})
    client.post(
        reverse("checkout"),
        {"full_name": "A Shopper", "email": "a@example.com", "address": "1 Road, Town"},
    )
    attributed = Event.objects.filter(recommendation_id=rec_id).exclude(event_type="click")
    assert sorted(e.event_type for e in attributed) == ["add_to_cart", "purchase"]
    assert {e.product_id for e in attributed} == {str(shop["Pan"].pk)}
    assert {e.placement for e in attributed} == {"similar"}
    rake = Event.objects.filter(product_id=str(shop["Rake"].pk), event_type__in=["add_to_cart", "purchase"])
    assert rake.count() == 2 and not any(e.recommendation_id for e in rake)


def test_a_click_outside_the_window_attributes_nothing(shop):
    v = visitor()
    old = timezone.now() - timedelta(hours=rec_settings.ATTRIBUTION_HOURS + 1)
    tracking.insert_events(
        [
            tracking.build_event(
                "click",
                visitor_id=v,
                product_id=str(shop["Pan"].pk),
                placement="for_you",
                recommendation_id="r1",
                occurred_at=old,
            )
        ]
    )
    event = tracking.build_event("add_to_cart", visitor_id=v, product_id=str(shop["Pan"].pk))
    assert tracking.attribute([event]) == 0
    assert event.recommendation_id == ""
    another = tracking.build_event("add_to_cart", visitor_id=visitor(), product_id=str(shop["Pan"].pk))
    assert tracking.attribute([another]) == 0, "another shopper's click never counts"


# -- what staff tune: placements, cold-start and merchandising rules, exploration, experiments -----------------


def test_a_cold_start_rule_changes_what_an_anonymous_visitor_sees_and_leaves_shoppers_with_a_list_alone(shop):
    tune("for_you", fallback=["rules", "trending"])
    active_lists(trending={"": [(shop["Pan"], 9, "trending"), (shop["Pot"], 8, "trending")]})
    ColdStartRule.objects.create(
        name="garden week",
        audience="anonymous",
        source="hand_picked",
        products=[str(shop["Shears"].pk), str(shop["Hose"].pk)],
        placements=["for_you"],
    )
    anonymous = serving.recommend("for_you", shopper=f"v:{visitor()}", limit=2)
    assert ids(anonymous) == [str(shop["Shears"].pk), str(shop["Hose"].pk)]
    assert {i.source for i in anonymous.items} == {f"rule:{ColdStartRule.objects.get().pk}"}
    member = make_user()
    other = serving.recommend("for_you", shopper=f"u:{member.pk}", limit=2)
    assert ids(other) == [str(shop["Pan"].pk), str(shop["Pot"].pk)], "the rule is for anonymous visitors only"
    elsewhere = serving.recommend("trending", shopper=f"v:{visitor()}", limit=2)
    assert ids(elsewhere) == [str(shop["Pan"].pk), str(shop["Pot"].pk)], "the rule is for for_you only"


def test_a_rule_outside_its_window_or_outranked_does_not_apply(shop):
    now = timezone.now()
    ColdStartRule.objects.create(
        name="later",
        source="hand_picked",
        products=[str(shop["Hoe"].pk)],
        starts_at=now + timedelta(days=1),
        priority=5,
    )
    ColdStartRule.objects.create(name="low", source="hand_picked", products=[str(shop["Rake"].pk)], priority=1)
    ColdStartRule.objects.create(name="high", source="hand_picked", products=[str(shop["Kettle"].pk)], priority=3)
    assert ids(serving.recommend("for_you", shopper=f"v:{visitor()}", limit=1)) == [str(shop["Kettle"].pk)]


def test_a_campaign_rule_applies_to_visits_from_that_campaign(shop, client):
    ColdStartRule.objects.create(
        name="spring",
        audience="campaign",
        audience_value="spring",
        source="brand",
        source_value="Leaf",
        placements=["for_you"],
    )
    html = client.get(reverse("home") + "?utm_campaign=spring").content.decode()
    got = rendered_ids(block_html(html, "for_you"))
    assert set(got[:3]) == {str(shop[n].pk) for n in ("Rake", "Hoe", "Hose")}
    later = client.get(reverse("home")).content.decode()  # the visit remembers its campaign
    assert rendered_ids(block_html(later, "for_you"))[:3] == got[:3]
    plain = Client().get(reverse("home")).content.decode()
    assert rendered_ids(block_html(plain, "for_you"))[:3] != got[:3]


def test_merchandising_excludes_boosts_and_pins_and_names_the_rule(shop):
    v = visitor()
    ranked = [(shop[n], 10 - i, "for_you") for i, n in enumerate(["Pan", "Pot", "Wok", "Kettle", "Rake", "Hoe"])]
    active_lists(
        for_you={f"v:{v}": ranked}, trending={"": [(shop["Pot"], 9, "trending"), (shop["Shears"], 1, "trending")]}
    )
    MerchandisingRule.objects.create(
        name="no pots", action="exclude", target="product", target_value=str(shop["Pot"].pk)
    )
    MerchandisingRule.objects.create(
        name="garden up", action="boost", target="category", target_value="garden", strength=10, placements=["for_you"]
    )
    MerchandisingRule.objects.create(
        name="shears first", action="pin", target="product", target_value=str(shop["Shears"].pk), position=1
    )
    block = serving.recommend("for_you", shopper=f"v:{v}", limit=5)
    got = ids(block)
    assert got[0] == str(shop["Shears"].pk)
    assert got[1:3] == [str(shop["Rake"].pk), str(shop["Hoe"].pk)]
    assert str(shop["Pot"].pk) not in got
    assert block.items[0].rules == ["shears first"] and block.items[1].rules == ["garden up"]
    assert str(shop["Pot"].pk) not in ids(serving.recommend("trending", limit=8)), "excluded from fallback lists too"


def test_a_disabled_placement_renders_nothing_and_a_strategy_replaces_the_model(shop):
    v = visitor()
    active_lists(
        for_you={f"v:{v}": [(shop["Pan"], 1.0, "for_you")]},
        trending={"": [(shop["Hose"], 9, "trending"), (shop["Rake"], 8, "trending")]},
    )
    tune("for_you", strategy="trending")
    block = serving.recommend("for_you", shopper=f"v:{v}", limit=2)
    assert ids(block) == [str(shop["Hose"].pk), str(shop["Rake"].pk)] and block.model == "trending"
    tune("for_you", enabled=False)
    assert serving.recommend("for_you", shopper=f"v:{v}").items == []


def test_exploration_gives_new_products_a_share_of_the_slots(shop):
    v = visitor()
    ranked = [(shop[n], 10 - i, "for_you") for i, n in enumerate(["Pan", "Pot", "Wok", "Kettle", "Rake", "Hoe"])]
    active_lists(for_you={f"v:{v}": ranked})
    fresh = make_product("Seedling kit", category=shop["Rake"].category)
    catalog.sync_products()
    ProductProfile.objects.exclude(product_id=str(fresh.pk)).update(created_at=timezone.now() - timedelta(days=90))
    tune("for_you", exploration_share=0.25, exploration_max_age_days=14, max_per_category=0, max_per_brand=0)
    block = serving.recommend("for_you", shopper=f"v:{v}", limit=4)
    assert ids(block)[0] == str(shop["Pan"].pk), "never the first slot"
    explored = [i for i in block.items if i.source == "exploration"]
    assert [i.product_id for i in explored] == [str(fresh.pk)]
    assert explored[0].reason_text == "New arrival"
    html = Client().get(reverse("home")).content.decode()
    impression = Event.objects.filter(event_type="impression", placement="for_you").latest("pk")
    assert impression.context["items"] == rendered_ids(block_html(html, "for_you"))


def test_an_experiment_arm_serves_its_strategy_and_stamps_the_impression(shop):
    active_lists(trending={"": [(shop["Hose"], 9, "trending")]}, for_you={})
    experiment = Experiment.objects.create(name="trend test", placement="for_you")
    ExperimentVariant.objects.create(experiment=experiment, name="control", share=0.5, strategy="model")
    ExperimentVariant.objects.create(experiment=experiment, name="newest", share=0.5, strategy="newest")
    operations.start(experiment.pk)
    arms = {}
    for _ in range(40):
        shopper = f"v:{visitor()}"
        block = serving.recommend("for_you", shopper=shopper, limit=3)
        arms.setdefault(block.variant, []).append(block)
        assert block.variant == experiments.assign("for_you", shopper).stamp
    assert set(arms) == {f"{experiment.pk}:control", f"{experiment.pk}:newest"}
    assert {b.model for b in arms[f"{experiment.pk}:newest"]} == {"newest"}
    client = Client()
    html = client.get(reverse("home")).content.decode()
    impression = Event.objects.filter(event_type="impression", placement="for_you").latest("pk")
    assert impression.variant in arms
    assert impression.context["items"] == rendered_ids(block_html(html, "for_you"))


def test_the_preview_is_what_the_widget_serves(shop):
    v = visitor()
    active_lists(
        for_you={f"v:{v}": [(shop["Pan"], 2.0, "for_you"), (shop["Rake"], 1.0, "for_you")]},
        trending={"": [(shop["Hose"], 9, "trending")]},
    )
    MerchandisingRule.objects.create(
        name="garden up", action="boost", target="category", target_value="garden", strength=10
    )
    request = RequestFactory().get("/")
    request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = v
    html = render('{% load recommendations %}{% recommendations "for_you" limit=4 %}', request)
    preview = serving.recommend("for_you", shopper=f"v:{v}", limit=4, preview=True)
    assert ids(preview) == rendered_ids(html)
