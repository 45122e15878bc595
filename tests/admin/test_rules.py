"""The admin for placements, cold-start and merchandising rules, and the placement preview (admin/placements.py,
admin/cold_start.py, admin/merchandising.py, admin/preview.py).

Everything goes through the admin's real forms with the test client and is checked where shoppers see it: the home
page's "Recommended for you" block, or the template tag rendered for the same shopper.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from recommendations import experiments, serving, tracking
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
    TrainingRun,
)
from tests.factories import (
    active_lists,
    block_html,
    make_small_shop,
    make_user,
    render,
    rendered_ids,
    staff_with,
    visitor,
)

pytestmark = pytest.mark.django_db

RULE_ADD = "admin:recommendations_coldstartrule_add"
RULE_CHANGE = "admin:recommendations_coldstartrule_change"
MERCH_ADD = "admin:recommendations_merchandisingrule_add"
PLACEMENT_CHANGE = "admin:recommendations_placement_change"
PREVIEW = "admin:recommendations_placement_preview"


@pytest.fixture
def shop():
    return make_small_shop()


def pid(shop, *names: str) -> list[str]:
    return [str(shop[n].pk) for n in names]


@pytest.fixture
def admin_username() -> str:
    """Rules and placements record who changed them by username; the tests here assert this one."""
    return "rules-admin"


def rule_form(**fields) -> dict:
    """A complete POST of the cold-start rule form (blank optional fields), overridden by `fields`."""
    data = {
        "name": "rule",
        "active": "on",
        "priority": "0",
        "placements": [],
        "audience": "everyone",
        "audience_number": "",
        "audience_value": "",
        "source": "trending",
        "source_value": "",
        "source_days": "",
        "price_min": "",
        "price_max": "",
        "products": "",
        "starts_at_0": "",
        "starts_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
    }
    data.update(fields)
    if data.get("active") is False:
        del data["active"]
    return data


def merch_form(**fields) -> dict:
    data = {
        "name": "merch",
        "active": "on",
        "priority": "0",
        "placements": [],
        "action": "boost",
        "target": "category",
        "target_value": "garden",
        "price_min": "",
        "price_max": "",
        "position": "",
        "strength": "2",
        "starts_at_0": "",
        "starts_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
    }
    data.update(fields)
    return data


def placement_form(row: Placement, **fields) -> dict:
    steps = list(row.fallback) + [""] * 5
    data = {
        "title": row.title,
        "enabled": "on" if row.enabled else "",
        "size": str(row.size),
        "strategy": row.strategy,
        "allow_bought": "on" if row.allow_bought else "",
        "max_per_category": str(row.max_per_category),
        "max_per_brand": str(row.max_per_brand),
        **{f"fallback_{i}": steps[i] for i in range(5)},
        "exploration_share": str(row.exploration_share),
        "exploration_max_age_days": str(row.exploration_max_age_days),
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v != "" or k.startswith(("fallback_", "title"))}


def split(when) -> dict:
    local = timezone.localtime(when)
    return {"0": local.strftime("%Y-%m-%d"), "1": local.strftime("%H:%M:%S")}


def window(prefix: str, when) -> dict:
    parts = split(when)
    return {f"{prefix}_0": parts["0"], f"{prefix}_1": parts["1"]}


def home_for_you(client: Client) -> list[str]:
    return rendered_ids(block_html(client.get(reverse("home")).content.decode(), "for_you"))


def field_error(html: str, field: str) -> str:
    """The error text the admin shows in a field's row ("" when the row has none)."""
    match = re.search(
        rf'<div class="form-row errors[^"]*field-{field}[^"]*">\s*<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>',
        html,
        re.S,
    )
    return unescape(re.sub(r"<[^>]+>", " ", match.group(1))) if match else ""


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors if response.context else {}


def preview_ids(html: str, table: str) -> list[str]:
    match = re.search(rf'<table id="{table}">.*?</table>', html, re.S)
    return re.findall(r'data-rec-product="([^"]+)"', match.group(0)) if match else []


def writes(queries) -> list[str]:
    """The statements that changed the database (the session row aside)."""
    return [
        q["sql"]
        for q in queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) and "django_session" not in q["sql"]
    ]


# -- every page renders ------------------------------------------------------------------------------------------


def test_every_page_renders_for_a_superuser(shop, staff_client):
    rule = ColdStartRule.objects.create(name="garden", source="hand_picked", products=pid(shop, "Rake"))
    merch = MerchandisingRule.objects.create(name="up", action="boost", target="brand", target_value="Leaf")
    placement = Placement.objects.get(name="for_you")
    pages = [
        reverse("admin:recommendations_placement_changelist"),
        reverse(PLACEMENT_CHANGE, args=[placement.pk]),
        reverse("admin:recommendations_coldstartrule_changelist"),
        reverse(RULE_ADD),
        reverse(RULE_CHANGE, args=[rule.pk]),
        reverse("admin:recommendations_merchandisingrule_changelist"),
        reverse(MERCH_ADD),
        reverse("admin:recommendations_merchandisingrule_change", args=[merch.pk]),
        reverse(PREVIEW),
        reverse(PREVIEW) + "?placement=for_you",
        reverse(PREVIEW) + f"?placement=similar&product={shop['Pan'].pk}&category=kitchen&campaign=spring",
    ]
    for url in pages:
        response = staff_client.get(url)
        assert response.status_code == 200, url
    changelist = staff_client.get(reverse("admin:recommendations_coldstartrule_changelist")).content.decode()
    assert "live" in changelist and "Hand-picked products, in order: " + str(shop["Rake"].pk) in changelist
    placements = staff_client.get(reverse("admin:recommendations_placement_changelist")).content.decode()
    assert "rules → trending_category → trending → popular" in placements
    assert reverse(PREVIEW) in placements


# -- placements ------------------------------------------------------------------------------------------------


def test_a_placement_change_shows_on_the_next_page_and_records_who(shop, staff_client, admin_user):
    active_lists(
        trending={"": [(shop[n], 9 - i, "trending") for i, n in enumerate(["Pan", "Rake", "Pot", "Hoe", "Wok"])]}
    )
    shopper = Client()
    assert len(home_for_you(shopper)) == 8
    row = Placement.objects.get(name="for_you")
    response = staff_client.post(
        reverse(PLACEMENT_CHANGE, args=[row.pk]),
        placement_form(
            row,
            size="3",
            title="Picked for you",
            fallback_0="trending",
            fallback_1="rules",
            fallback_2="",
            fallback_3="",
        ),
    )
    assert response.status_code == 302, form_errors(response)
    row.refresh_from_db()
    assert (row.size, row.title, row.fallback, row.updated_by) == (
        3,
        "Picked for you",
        ["trending", "rules"],
        "rules-admin",
    )
    html = shopper.get(reverse("home")).content.decode()
    assert rendered_ids(block_html(html, "for_you")) == pid(shop, "Pan", "Rake", "Pot")
    assert "Picked for you" in block_html(html, "for_you")
    entry = LogEntry.objects.get(object_id=str(row.pk), action_flag=CHANGE)
    assert entry.user_id == admin_user.pk


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"size": "0"}, "size", "1 to 50"),
        ({"size": "51"}, "size", "1 to 50"),
        ({"exploration_share": "0.6"}, "exploration_share", "Between 0 and 0.5"),
        ({"exploration_share": "-0.1"}, "exploration_share", "Between 0 and 0.5"),
        ({"fallback_0": "trending", "fallback_1": "rules", "fallback_2": "trending"}, "fallback", "repeated: trending"),
        ({"fallback_0": "everything"}, "fallback", "valid choice"),
        ({"exploration_max_age_days": "0"}, "exploration_max_age_days", "At least one day"),
    ],
)
def test_placement_validation_shows_on_the_field(shop, staff_client, fields, field, message):
    row = Placement.objects.get(name="for_you")
    before = Placement.objects.values().get(pk=row.pk)
    response = staff_client.post(reverse(PLACEMENT_CHANGE, args=[row.pk]), placement_form(row, **fields))
    assert response.status_code == 200
    assert message in field_error(response.content.decode(), field)
    assert Placement.objects.values().get(pk=row.pk) == before


def test_a_placement_keeps_its_name_and_the_built_in_ones_cannot_be_deleted(shop, staff_client):
    row = Placement.objects.get(name="for_you")
    response = staff_client.post(reverse(PLACEMENT_CHANGE, args=[row.pk]), placement_form(row, name="trending"))
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.name == "for_you", "the name is read-only after creation"
    assert staff_client.get(reverse("admin:recommendations_placement_delete", args=[row.pk])).status_code == 403
    assert staff_client.post(reverse("admin:recommendations_placement_delete", args=[row.pk])).status_code == 403
    assert Placement.objects.filter(name="for_you").exists()
    changelist = staff_client.get(reverse("admin:recommendations_placement_changelist"))
    assert "delete_selected" not in changelist.content.decode()
    # Every configured placement has its row (migration 0006), so there is nothing to add...
    assert staff_client.get(reverse("admin:recommendations_placement_add")).status_code == 403
    # ...until one is missing: then only that one may be added, and it starts from its settings.
    Placement.objects.filter(name="buy_again").delete()
    add = staff_client.get(reverse("admin:recommendations_placement_add") + "?name=buy_again").content.decode()
    assert '<option value="buy_again" selected>' in add and '<option value="for_you"' not in add
    taken = staff_client.post(
        reverse("admin:recommendations_placement_add"), {**placement_form(row), "name": "for_you"}
    )
    assert "valid choice" in field_error(taken.content.decode(), "name")
    added = staff_client.post(
        reverse("admin:recommendations_placement_add"),
        {**placement_form(row, fallback_0="", fallback_1="", fallback_2="", fallback_3=""), "name": "buy_again"},
    )
    assert added.status_code == 302
    assert Placement.objects.get(name="buy_again").updated_by == "rules-admin"
    # A row whose placement is no longer configured serves nothing and may go.
    stale = Placement.objects.create(name="old_surface")
    deleted = staff_client.post(reverse("admin:recommendations_placement_delete", args=[stale.pk]), {"post": "yes"})
    assert deleted.status_code == 302
    assert not Placement.objects.filter(name="old_surface").exists()


# -- cold-start rules: validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"audience": "few_events"}, "audience_number", "Give N"),
        ({"audience": "new_account", "audience_number": "0"}, "audience_number", "Give N"),
        ({"audience": "category"}, "audience_value", "category slug"),
        ({"audience": "category", "audience_value": "toys"}, "audience_value", "No product is in the category “toys”"),
        ({"audience": "campaign"}, "audience_value", "campaign name"),
        ({"audience": "campaign", "audience_value": "spring sale!"}, "audience_value", "letters, digits"),
        ({"source": "brand"}, "source_value", "Give the brand"),
        ({"source": "brand", "source_value": "Nope"}, "source_value", "No product has the brand “Nope”"),
        ({"source": "price_band"}, "price_min", "lowest price"),
        ({"source": "price_band", "price_min": "50", "price_max": "10"}, "price_max", "at least the lowest"),
        ({"source": "hand_picked"}, "products", "at least one product"),
        ({"source": "hand_picked", "products": "999999, abc"}, "products", "“999999”, “abc”"),
        ({"placements": ["nowhere"]}, "placements", "valid choice"),
        ({"placements": ["for_you", "buy_again"]}, "placements", "buy_again never asks the cold-start rules"),
    ],
)
def test_cold_start_rule_validation_shows_on_the_field(shop, staff_client, fields, field, message):
    response = staff_client.post(reverse(RULE_ADD), rule_form(**fields))
    assert response.status_code == 200
    assert message in field_error(response.content.decode(), field), field_error(response.content.decode(), field)
    assert not ColdStartRule.objects.exists()


def test_a_rule_must_end_after_it_starts(shop, staff_client):
    now = timezone.now()
    response = staff_client.post(
        reverse(RULE_ADD), rule_form(**window("starts_at", now + timedelta(days=2)), **window("ends_at", now))
    )
    assert "must end after it starts" in field_error(response.content.decode(), "ends_at")
    assert not ColdStartRule.objects.exists()


def test_hand_picked_products_keep_their_order_and_the_form_shows_them_one_per_line(shop, staff_client):
    response = staff_client.post(
        reverse(RULE_ADD),
        rule_form(source="hand_picked", products=f"{shop['Shears'].pk}, {shop['Hose'].pk}\n{shop['Shears'].pk}"),
    )
    assert response.status_code == 302
    rule = ColdStartRule.objects.get()
    assert rule.products == pid(shop, "Shears", "Hose"), "in order, once each"
    page = staff_client.get(reverse(RULE_CHANGE, args=[rule.pk])).content.decode()
    assert f"{shop['Shears'].pk}\n{shop['Hose'].pk}</textarea>" in page


# -- cold-start rules: what shoppers see ------------------------------------------------------------------------


def tune_fallback(name: str, fallback: list[str]) -> None:
    """Set a placement's fallback as staff would in the admin (its row overrides the settings)."""
    row = Placement.objects.get(name=name)
    row.fallback = fallback
    row.save()


def test_a_rule_saved_in_the_admin_changes_the_home_page_at_once_for_anonymous_visitors_only(
    shop, staff_client, admin_user
):
    tune_fallback("for_you", ["rules", "trending"])  # anonymous visitors see trending here (the default: popular)
    member = make_user()
    stored = ["Pan", "Pot", "Rake", "Hoe", "Wok", "Kettle", "Hose", "Shears"]
    active_lists(
        trending={"": [(shop[n], 9 - i, "trending") for i, n in enumerate(["Pan", "Pot", "Wok", "Rake"])]},
        for_you={f"u:{member.pk}": [(shop[n], 10 - i, "for_you") for i, n in enumerate(stored)]},
    )
    anonymous, shopper = Client(), Client()
    shopper.force_login(member)
    assert home_for_you(anonymous)[:2] == pid(shop, "Pan", "Pot")
    members_before = home_for_you(shopper)
    assert members_before[:4] == pid(shop, "Pan", "Pot", "Rake", "Hoe")

    response = staff_client.post(
        reverse(RULE_ADD),
        rule_form(
            name="garden week",
            audience="anonymous",
            source="hand_picked",
            products=f"{shop['Shears'].pk}\n{shop['Hose'].pk}",
            placements=["for_you"],
        ),
    )
    assert response.status_code == 302
    rule = ColdStartRule.objects.get()
    assert rule.updated_by == "rules-admin"
    assert LogEntry.objects.get(object_id=str(rule.pk), action_flag=ADDITION).user_id == admin_user.pk

    assert home_for_you(anonymous)[:2] == pid(shop, "Shears", "Hose"), "the same visitor's next page"
    assert home_for_you(shopper) == members_before, "a shopper with a stored list is left alone"
    elsewhere = serving.recommend("trending", shopper=f"v:{visitor()}", limit=2)
    assert [i.product_id for i in elsewhere.items] == pid(shop, "Pan", "Pot"), "the rule is for for_you only"


def test_priority_and_windows_set_in_the_admin_decide_which_rule_serves(shop, staff_client):
    active_lists(trending={"": [(shop["Pan"], 9, "trending")]})
    staff_client.post(
        reverse(RULE_ADD), rule_form(name="low", priority="1", source="hand_picked", products=str(shop["Rake"].pk))
    )
    staff_client.post(
        reverse(RULE_ADD), rule_form(name="high", priority="5", source="hand_picked", products=str(shop["Kettle"].pk))
    )
    assert home_for_you(Client())[0] == str(shop["Kettle"].pk), "the higher priority wins"

    high = ColdStartRule.objects.get(name="high")
    tomorrow = timezone.now() + timedelta(days=1)
    response = staff_client.post(
        reverse(RULE_CHANGE, args=[high.pk]),
        rule_form(
            name="high",
            priority="5",
            source="hand_picked",
            products=str(shop["Kettle"].pk),
            **window("starts_at", tomorrow),
        ),
    )
    assert response.status_code == 302
    assert home_for_you(Client())[0] == str(shop["Rake"].pk), "a rule that starts tomorrow does not serve today"
    changelist = staff_client.get(reverse("admin:recommendations_coldstartrule_changelist")).content.decode()
    assert "scheduled" in changelist

    low = ColdStartRule.objects.get(name="low")
    staff_client.post(
        reverse(RULE_CHANGE, args=[low.pk]),
        rule_form(name="low", priority="1", source="hand_picked", products=str(shop["Rake"].pk), active=False),
    )
    assert home_for_you(Client())[0] == str(shop["Pan"].pk), "no live rule left: the block falls back to trending"


# -- cold-start rules: the live preview ----------------------------------------------------------------------------


def test_a_rule_page_lists_what_the_saved_rule_gives(shop, staff_client):
    ProductProfile.objects.filter(product_id=str(shop["Hoe"].pk)).update(in_stock=False)
    rule = ColdStartRule.objects.create(
        name="garden", source="hand_picked", products=pid(shop, "Shears", "Hoe", "Hose"), placements=["for_you"]
    )
    html = staff_client.get(reverse(RULE_CHANGE, args=[rule.pk])).content.decode()
    assert preview_ids(html, "rec-rule-products") == pid(shop, "Shears", "Hose")
    table = re.search(r'<table id="rec-rule-products">.*?</table>', html, re.S).group(0)
    assert "Shears" in table and "garden" in table and "80" in table  # name, category, price
    assert f"Hoe ({shop['Hoe'].pk}): out of stock" in html
    assert 'name="_preview"' in html


def test_preview_shows_the_edited_values_and_writes_nothing(shop, staff_client):
    rule = ColdStartRule.objects.create(
        name="garden", audience="anonymous", source="hand_picked", products=pid(shop, "Shears", "Hose")
    )
    saved = ColdStartRule.objects.values().get(pk=rule.pk)
    edited = rule_form(
        name="kitchen instead",
        audience="anonymous",
        source="hand_picked",
        products=f"{shop['Kettle'].pk}, {shop['Wok'].pk}",
        _preview="1",
    )
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.post(reverse(RULE_CHANGE, args=[rule.pk]), edited)
    assert response.status_code == 200
    html = response.content.decode()
    assert preview_ids(html, "rec-rule-products") == pid(shop, "Kettle", "Wok")
    assert "These values, not saved yet." in html
    assert "Please correct" not in html
    assert 'value="kitchen instead"' in html, "the form comes back with the edits"
    assert writes(queries.captured_queries) == []
    assert ColdStartRule.objects.values().get(pk=rule.pk) == saved
    assert not LogEntry.objects.exists()
    # What serving reads was not touched: a new visitor still gets the saved rule's products.
    assert home_for_you(Client())[:2] == pid(shop, "Shears", "Hose")

    # A new rule can be previewed before it exists; invalid values show their errors and no preview.
    new = staff_client.post(
        reverse(RULE_ADD), rule_form(source="brand", source_value="Leaf", placements=["for_you"], _preview="1")
    )
    assert preview_ids(new.content.decode(), "rec-rule-products") == pid(shop, "Rake", "Hoe", "Hose")
    assert ColdStartRule.objects.count() == 1
    bad = staff_client.post(reverse(RULE_ADD), rule_form(source="brand", _preview="1"))
    assert "Give the brand" in field_error(bad.content.decode(), "source_value")
    assert 'id="rec-rule-products"' not in bad.content.decode()


def test_preview_of_trending_in_a_category_uses_the_page_category_given(shop, staff_client):
    active_lists(trending={"category:garden": [(shop["Hose"], 5, "trending"), (shop["Rake"], 4, "trending")]})
    data = rule_form(source="trending_category", _preview="1")
    without = staff_client.post(reverse(RULE_ADD), data).content.decode()
    assert "give a category" in without
    within = staff_client.post(reverse(RULE_ADD), {**data, "_preview_category": "garden"}).content.decode()
    assert preview_ids(within, "rec-rule-products") == pid(shop, "Hose", "Rake")
    assert "Trending in Garden" in within


# -- merchandising rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"action": "pin", "target": "product", "target_value": "{Pan}"}, "position", "needs the position"),
        ({"action": "pin", "target": "product", "target_value": "{Pan}", "position": "51"}, "position", "at most 50"),
        ({"target": "product", "target_value": "999999"}, "target_value", "No product has the id “999999”"),
        ({"target": "product", "target_value": ""}, "target_value", "Give the product id"),
        ({"target": "category", "target_value": "toys"}, "target_value", "No product is in the category “toys”"),
        ({"target": "brand", "target_value": "Nope"}, "target_value", "No product has the brand “Nope”"),
        ({"target": "price_band", "target_value": ""}, "price_min", "lowest price"),
        ({"target": "price_band", "price_min": "30", "price_max": "20"}, "price_max", "at least the lowest"),
        ({"strength": "0.5"}, "strength", "At least 1"),
        ({"placements": ["nowhere"]}, "placements", "valid choice"),
    ],
)
def test_merchandising_rule_validation_shows_on_the_field(shop, staff_client, fields, field, message):
    fields = {k: (v.format(Pan=shop["Pan"].pk) if isinstance(v, str) else v) for k, v in fields.items()}
    response = staff_client.post(reverse(MERCH_ADD), merch_form(**fields))
    assert response.status_code == 200
    assert message in field_error(response.content.decode(), field), field_error(response.content.decode(), field)
    assert not MerchandisingRule.objects.exists()


def test_a_pin_saved_in_the_admin_leads_the_block_even_for_a_new_visitor(shop, staff_client):
    """A new visitor's for_you comes from the fallback alone; a product pin still takes its slot there."""
    tune_fallback("for_you", ["rules", "trending"])
    active_lists(trending={"": [(shop[n], 9 - i, "trending") for i, n in enumerate(["Pan", "Pot", "Wok"])]})
    now = timezone.now()
    response = staff_client.post(
        reverse(MERCH_ADD),
        merch_form(
            name="shears first",
            action="pin",
            target="product",
            target_value=str(shop["Shears"].pk),
            position="1",
            placements=["for_you"],
            **window("ends_at", now + timedelta(days=7)),
        ),
    )
    assert response.status_code == 302
    assert MerchandisingRule.objects.get().updated_by == "rules-admin"
    assert home_for_you(Client())[:3] == pid(shop, "Shears", "Pan", "Pot")
    changelist = staff_client.get(reverse("admin:recommendations_merchandisingrule_changelist")).content.decode()
    assert f"product {shop['Shears'].pk} at 1" in changelist and "live" in changelist


# -- the placement preview -----------------------------------------------------------------------------------------


def preview_page(client: Client, **params) -> str:
    response = client.get(reverse(PREVIEW), params)
    assert response.status_code == 200
    return response.content.decode()


def widget_ids(request) -> list[str]:
    return rendered_ids(render('{% load recommendations %}{% recommendations "for_you" %}', request))


def test_the_preview_is_what_the_widget_serves_the_same_shopper(shop, staff_client):
    v = visitor()
    member = make_user()
    ranked = [(shop[n], 10 - i, "for_you") for i, n in enumerate(["Pan", "Rake", "Pot", "Hoe", "Kettle"])]
    active_lists(
        for_you={f"v:{v}": ranked, f"u:{member.pk}": list(reversed(ranked))},
        similar={str(shop["Wok"].pk): [(shop["Shears"], 1.0, "also")]},
        trending={"": [(shop["Hose"], 9, "trending"), (shop["Wok"], 8, "trending")]},
    )
    MerchandisingRule.objects.create(name="garden up", action="boost", target="category", target_value="garden")
    event = tracking.build_event("view", visitor_id=v, product_id=str(shop["Wok"].pk))
    tracking.insert_events([event])
    tracking.on_events_stored([event])
    events_before = Event.objects.count()

    with CaptureQueriesContext(connection) as queries:
        html = preview_page(staff_client, placement="for_you", who="shopper", shopper=f"v:{v}")
    assert writes(queries.captured_queries) == []
    assert Event.objects.count() == events_before, "the preview records no impression"
    request = RequestFactory().get("/")
    request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = v
    shown = widget_ids(request)
    assert len(shown) == 8
    assert preview_ids(html, "rec-preview-items") == shown
    assert "garden up" in html and "session" in html and "Because you looked at Wok" in html

    html = preview_page(staff_client, placement="for_you", who="shopper", shopper=f"u:{member.pk}")
    request = RequestFactory().get("/")
    request.user = member
    assert preview_ids(html, "rec-preview-items") == widget_ids(request)
    assert preview_ids(html, "rec-preview-items")[:2] == pid(shop, "Hoe", "Kettle"), "their list, garden boosted"


def test_the_preview_names_the_rule_model_arm_and_serving_run(shop, staff_client):
    active_lists(trending={"": [(shop["Pan"], 9, "trending")]})
    rule = ColdStartRule.objects.create(
        name="garden week", audience="anonymous", source="hand_picked", products=pid(shop, "Shears", "Hose")
    )
    run = TrainingRun.objects.create(status=TrainingRun.Status.SUCCEEDED, chosen="ease", is_serving=True)
    experiment = Experiment.objects.create(name="newest test", placement="for_you")
    ExperimentVariant.objects.create(experiment=experiment, name="control", share=0.5, strategy="model")
    ExperimentVariant.objects.create(experiment=experiment, name="newest", share=0.5, strategy="newest")
    operations.start(experiment.pk)
    # A visitor the bucketing puts in the control arm, so the block is the model's (and the rule's).
    v = next(
        key for key in (visitor() for _ in range(200)) if experiments.assign("for_you", f"v:{key}").name == "control"
    )

    html = preview_page(staff_client, placement="for_you", who="shopper", shopper=f"v:{v}")
    assert preview_ids(html, "rec-preview-items")[:2] == pid(shop, "Shears", "Hose")
    rule_url = reverse(RULE_CHANGE, args=[rule.pk])
    assert f'<a href="{rule_url}">cold-start rule “garden week”</a>' in html
    assert f"rule:{rule.pk}" in html
    assert re.search(r'id="rec-preview-model">serving model', html)
    experiment_url = reverse("admin:recommendations_experiment_change", args=[experiment.pk])
    assert f'<a href="{experiment_url}">{experiment.pk}:control</a>' in html
    run_url = reverse("admin:recommendations_trainingrun_change", args=[run.pk])
    assert f'<a href="{run_url}">run #{run.pk}</a>' in html

    fresh = preview_page(staff_client, placement="for_you", who="anonymous")
    assert preview_ids(fresh, "rec-preview-items")[:2] == pid(shop, "Shears", "Hose"), "a new visitor matches the rule"


def test_preview_form_errors_are_shown_not_raised(shop, staff_client):
    html = preview_page(staff_client, placement="for_you", who="shopper", shopper="someone")
    assert "u:&lt;user id&gt; or v:&lt;visitor id&gt;" in html
    assert 'id="rec-preview-items"' not in html
    html = preview_page(staff_client, placement="similar", product="999999")
    assert "No product has the id “999999”" in html
    html = preview_page(staff_client, placement="for_you", who="shopper")
    assert "Give the shopper" in html
    assert "v:someone" in preview_page(staff_client, placement="for_you", shopper="v:someone"), "a key alone is enough"
    assert "valid choice" in preview_page(staff_client, placement="nowhere")


# -- permissions -------------------------------------------------------------------------------------------------


def test_staff_without_change_permission_get_403_on_every_post(shop):
    rule = ColdStartRule.objects.create(name="garden", source="hand_picked", products=pid(shop, "Rake"))
    merch = MerchandisingRule.objects.create(name="up", action="boost", target="brand", target_value="Leaf")
    placement = Placement.objects.get(name="for_you")
    viewer, _ = staff_with(Client(), "view_coldstartrule", "view_merchandisingrule", "view_placement")

    for url in (
        reverse(PLACEMENT_CHANGE, args=[placement.pk]),
        reverse("admin:recommendations_merchandisingrule_change", args=[merch.pk]),
        reverse("admin:recommendations_coldstartrule_changelist"),
    ):
        assert viewer.get(url).status_code == 200, url
    page = viewer.get(reverse(RULE_CHANGE, args=[rule.pk]))
    assert page.status_code == 200
    assert preview_ids(page.content.decode(), "rec-rule-products") == pid(shop, "Rake"), "reading is allowed"
    assert 'name="_preview"' not in page.content.decode(), "no button they could not use"

    posts = [
        (
            reverse(RULE_CHANGE, args=[rule.pk]),
            rule_form(source="hand_picked", products=str(shop["Hoe"].pk), _preview="1"),
        ),
        (reverse(RULE_CHANGE, args=[rule.pk]), rule_form(source="hand_picked", products=str(shop["Hoe"].pk))),
        (reverse(RULE_ADD), rule_form(_preview="1")),
        (reverse(RULE_ADD), rule_form()),
        (reverse("admin:recommendations_coldstartrule_delete", args=[rule.pk]), {"post": "yes"}),
        (reverse(MERCH_ADD), merch_form()),
        (reverse("admin:recommendations_merchandisingrule_change", args=[merch.pk]), merch_form(strength="9")),
        (reverse(PLACEMENT_CHANGE, args=[placement.pk]), placement_form(placement, size="2")),
    ]
    for url, data in posts:
        assert viewer.post(url, data).status_code == 403, url
    assert ColdStartRule.objects.get().products == pid(shop, "Rake")
    assert MerchandisingRule.objects.get().strength == 2.0
    assert Placement.objects.get(name="for_you").size == 8
    assert not LogEntry.objects.exists()

    # The preview page needs only the view permission on placements, and is read with GET.
    assert viewer.get(reverse(PREVIEW), {"placement": "for_you"}).status_code == 200
    assert viewer.post(reverse(PREVIEW), {"placement": "for_you"}).status_code == 405
    outsider, _ = staff_with(Client(), "view_coldstartrule")
    assert outsider.get(reverse(PREVIEW), {"placement": "for_you"}).status_code == 403

    # A rule editor may preview edits (the button POSTs like Save does).
    editor, _ = staff_with(Client(), "view_coldstartrule", "change_coldstartrule")
    response = editor.post(
        reverse(RULE_CHANGE, args=[rule.pk]),
        rule_form(source="hand_picked", products=str(shop["Hoe"].pk), _preview="1"),
    )
    assert response.status_code == 200
    assert preview_ids(response.content.decode(), "rec-rule-products") == pid(shop, "Hoe")
