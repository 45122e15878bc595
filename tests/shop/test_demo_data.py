"""generate_demo_data and create_demo_logins: a deterministic, consistent synthetic shop and the demo's logins."""

from __future__ import annotations

import io
import re
from collections import Counter
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Count, Sum

from recommendations.models import Event, ProductProfile
from shop.models import Brand, Category, Favorite, Order, OrderLine, Product

pytestmark = pytest.mark.django_db

NOW = "2024-06-01T12:00:00Z"
SMALL = ["--users", "25", "--products", "40", "--days", "30", "--now", NOW, "--no-progress"]


def generate(*args: str, seed: int = 1) -> str:
    out = io.StringIO()
    call_command("generate_demo_data", *SMALL, "--seed", str(seed), *args, stdout=out)
    return out.getvalue()


def wipe() -> None:
    Event.objects.all().delete()
    OrderLine.objects.all().delete()
    Order.objects.all().delete()
    Favorite.objects.all().delete()
    ProductProfile.objects.all().delete()
    Product.objects.all().delete()
    Brand.objects.all().delete()
    Category.objects.all().delete()
    get_user_model().objects.filter(username__startswith="demo_user_").delete()


def signature() -> dict:
    """What the shop looks like, by names rather than database ids (which differ between runs)."""
    product_name = dict(Product.objects.values_list("pk", "name"))
    username = dict(get_user_model().objects.values_list("pk", "username"))
    first_events = [
        (
            e.event_id,
            e.event_type,
            product_name.get(int(e.product_id)) if e.product_id else None,
            username.get(int(e.user_id)) if e.user_id else e.visitor_id,
            e.quantity,
            e.value,
            e.query,
            e.occurred_at,
        )
        for e in Event.objects.order_by("id")[:40]
    ]
    return {
        "counts": Counter(Event.objects.values_list("event_type", flat=True)),
        "orders": Order.objects.count(),
        "products": list(Product.objects.order_by("name").values_list("name", "price", "stock", "created_at")),
        "first_events": first_events,
    }


def test_same_seed_same_shop_other_seed_other_shop():
    generate(seed=1)
    first = signature()
    wipe()
    generate(seed=1)
    assert signature() == first
    wipe()
    generate(seed=2)
    other = signature()
    assert other["products"] != first["products"]
    assert other["first_events"] != first["first_events"]


def test_the_funnel_narrows_and_every_kind_of_behaviour_appears():
    out = generate()
    counts = Counter(Event.objects.values_list("event_type", flat=True))
    assert counts["view"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert counts["search"] > 0 and counts["favorite"] > 0
    assert get_user_model().objects.filter(username__startswith="demo_user_").count() == 25
    assert not get_user_model().objects.filter(username__startswith="demo_user_").first().has_usable_password()
    anonymous = Event.objects.filter(user_id="").count()
    assert 0.1 < anonymous / Event.objects.count() < 0.5  # about 30% of sessions are anonymous
    assert f"{Event.objects.count()} events" in out
    assert Category.objects.count() >= 8
    # Consumables are bought again by the same shopper.
    repeat = (
        OrderLine.objects.filter(product__is_consumable=True, order__user__isnull=False)
        .values("order__user", "product")
        .annotate(orders=Count("order", distinct=True))
        .filter(orders__gte=2)
    )
    assert repeat.exists()


def test_orders_match_purchase_events_line_by_line():
    generate()
    lines = {
        (line.order_id, str(line.product_id)): line for line in OrderLine.objects.select_related("order", "product")
    }
    purchases = list(Event.objects.filter(event_type="purchase"))
    assert len(purchases) == len(lines) > 0
    for event in purchases:
        line = lines[(event.context["order_id"], event.product_id)]
        assert event.quantity == line.quantity
        assert event.value == line.unit_price * line.quantity
        assert event.occurred_at == line.order.created_at
        assert event.user_id == (str(line.order.user_id) if line.order.user_id else "")
    for order in Order.objects.prefetch_related("lines"):
        assert order.total == sum(line.unit_price * line.quantity for line in order.lines.all())


def test_events_only_touch_products_that_exist_and_fall_in_the_period():
    generate()
    created = {str(pk): when for pk, when in Product.objects.values_list("pk", "created_at")}
    end = datetime(2024, 6, 1, 12, tzinfo=UTC)
    for product_id, occurred_at in Event.objects.exclude(product_id="").values_list("product_id", "occurred_at"):
        assert created[product_id] <= occurred_at <= end
    first = Event.objects.order_by("occurred_at").first().occurred_at
    assert (end - first).days <= 30
    # Some products arrive during the period, most predate it.
    start = datetime(2024, 5, 2, 12, tzinfo=UTC)
    assert 0 < Product.objects.filter(created_at__gte=start).count() < Product.objects.count() / 2


def test_profiles_are_synced_with_sales_counts():
    generate()
    assert ProductProfile.objects.count() == Product.objects.count()
    sold = dict(
        Event.objects.filter(event_type="purchase")
        .values("product_id")
        .annotate(n=Sum("quantity"))
        .values_list("product_id", "n")
    )
    profiles = dict(ProductProfile.objects.values_list("product_id", "sales_count"))
    assert profiles == {pid: sold.get(pid, 0) for pid in profiles}
    coffee = ProductProfile.objects.filter(category="coffee").first()
    assert coffee.text and coffee.brand and coffee.price > 0


def test_if_empty_skips_and_a_full_catalog_is_refused():
    generate()
    events = Event.objects.count()
    out = generate("--if-empty", seed=5)
    assert "already has 40 products" in out
    assert Event.objects.count() == events
    with pytest.raises(CommandError, match="already has 40 products"):
        generate(seed=5)


def test_bad_arguments_are_named():
    with pytest.raises(CommandError) as caught:
        call_command("generate_demo_data", "--users", "0", "--days", "-1", "--now", "soon", "--no-progress")
    message = str(caught.value)
    assert "--users" in message and "--days" in message and "--now" in message
    assert Product.objects.count() == 0


# -- create_demo_logins -------------------------------------------------------------------------------------------


@pytest.fixture
def demo_settings(settings):
    """The demo runs with DEBUG on (the test runner turns it off); create_demo_logins refuses otherwise."""
    settings.DEBUG = True
    return settings


def logins() -> str:
    out = io.StringIO()
    call_command("create_demo_logins", stdout=out)
    return out.getvalue()


def test_demo_logins_are_idempotent_and_the_shopper_has_a_history(client, demo_settings):
    generate()
    out = logins()
    assert "http://127.0.0.1:8000" in out and "/admin/" in out
    User = get_user_model()
    shopper = User.objects.get(username="shopper")
    assert Event.objects.filter(user_id=str(shopper.pk), event_type="purchase").exists()
    assert Order.objects.filter(user=shopper).exists()

    again = logins()
    assert User.objects.filter(username__in=["staff", "shopper"]).count() == 2
    assert User.objects.get(username="shopper").pk == shopper.pk  # the same account, not another renamed one
    assert User.objects.filter(username__startswith="demo_user_").count() == 24
    staff = User.objects.get(username="staff")
    assert staff.is_staff and staff.is_superuser

    passwords = dict(re.findall(r"username: (\S+)\s+password: (\S+)", again))
    assert set(passwords) == {"staff", "shopper"}
    staff_password, shopper_password = passwords["staff"], passwords["shopper"]
    assert client.login(username="staff", password=staff_password)
    assert client.get("/admin/").status_code == 200
    client.logout()
    assert client.login(username="shopper", password=shopper_password)


def test_the_shopper_gets_personal_recommendations_after_precompute(demo_settings):
    from recommendations.serving import recommend_for_shopper

    generate()
    logins()
    call_command("precompute_recommendations", "--no-progress", stdout=io.StringIO())
    shopper = get_user_model().objects.get(username="shopper")
    block = recommend_for_shopper(f"u:{shopper.pk}", 8)
    assert block.source == "stored"
    assert block.items and all(item.reason.startswith("because:") for item in block.items[:1])


def test_without_generated_shoppers_the_shopper_gets_a_short_history(demo_settings):
    from tests.factories import make_category, make_product

    coffee = make_category("Coffee")
    for i in range(4):
        make_product(f"Roast {i}", category=coffee)
    out = logins()
    shopper = get_user_model().objects.get(username="shopper")
    kinds = set(Event.objects.filter(user_id=str(shopper.pk)).values_list("event_type", flat=True))
    assert kinds == {"view", "add_to_cart", "purchase"}
    assert "precompute_recommendations" in out
    events = Event.objects.count()
    logins()
    assert Event.objects.count() == events  # no second history


def test_demo_logins_refuse_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG is off"):
        logins()
    assert not get_user_model().objects.filter(username="staff").exists()
