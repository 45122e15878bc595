"""A pin on an out-of-stock or inactive product (or an empty category) warns instead of reading "live" and never
showing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from recommendations import catalog
from recommendations.models import MerchandisingRule, ProductProfile
from tests.factories import make_small_shop

pytestmark = pytest.mark.django_db


def pin_form(product_id: str, name: str = "pin it") -> dict:
    return {
        "name": name,
        "active": "on",
        "priority": "0",
        "placements": [],
        "action": "pin",
        "target": "product",
        "target_value": product_id,
        "price_min": "",
        "price_max": "",
        "position": "1",
        "strength": "2",
        "starts_at_0": "",
        "starts_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
    }


def test_a_pin_on_an_out_of_stock_product_warns_on_save_in_the_list_and_in_the_preview(staff_client):
    shop = make_small_shop()
    sold_out, fine = shop["Shears"], shop["Pan"]
    sold_out.stock = 0
    sold_out.save()
    catalog.sync_products()  # what the host's save signal does once the transaction commits
    assert ProductProfile.objects.get(product_id=str(sold_out.pk)).in_stock is False

    response = staff_client.post(
        reverse("admin:recommendations_merchandisingrule_add"), pin_form(str(sold_out.pk)), follow=True
    )
    page = response.content.decode()
    assert response.status_code == 200 and MerchandisingRule.objects.filter(name="pin it").exists()
    assert "will not show" in page and "out of stock" in page and 'class="warning"' in page

    changelist = staff_client.get(reverse("admin:recommendations_merchandisingrule_changelist")).content.decode()
    assert "never shows" in changelist

    preview = staff_client.get(
        reverse("admin:recommendations_placement_preview"), {"placement": "for_you", "who": "anonymous"}
    ).content.decode()
    assert 'id="rec-preview-unshown-pins"' in preview and "out of stock" in preview

    # A pin on a product that can show is saved without a warning and reads plain "live".
    MerchandisingRule.objects.all().delete()
    response = staff_client.post(
        reverse("admin:recommendations_merchandisingrule_add"), pin_form(str(fine.pk), "fine pin"), follow=True
    )
    assert "will not show" not in response.content.decode()
    changelist = staff_client.get(reverse("admin:recommendations_merchandisingrule_changelist")).content.decode()
    assert "never shows" not in changelist and "live" in changelist


def test_a_pin_on_an_inactive_product_or_an_empty_category_is_flagged():
    from recommendations.admin.merchandising import pin_problem

    shop = make_small_shop()
    ProductProfile.objects.filter(product_id=str(shop["Pan"].pk)).update(active=False)
    Action, Target = MerchandisingRule.Action, MerchandisingRule.Target
    inactive = MerchandisingRule(name="x", action=Action.PIN, target=Target.PRODUCT, target_value=str(shop["Pan"].pk))
    assert "inactive" in pin_problem(inactive)
    category = MerchandisingRule(name="y", action=Action.PIN, target=Target.CATEGORY, target_value="garden")
    assert pin_problem(category) == ""
    ProductProfile.objects.filter(category="garden").update(in_stock=False)
    assert "garden" in pin_problem(category)
    boost = MerchandisingRule(name="z", action=Action.BOOST, target=Target.CATEGORY, target_value="garden")
    assert pin_problem(boost) == ""
