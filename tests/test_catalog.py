"""The product sync's PRODUCT_FIELDS: a to-many string lookup is refused by name, with the fix, and never crashes the
sync; products are counted, not joined rows (tests/test_product_fields.py covers aggregates, Values and adapters).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import override_settings

from recommendations import catalog
from recommendations.models import ProductProfile
from tests.factories import make_product, make_user, recommendations_with

pytestmark = pytest.mark.django_db


USERS_AS_PRODUCTS = {"PRODUCT_MODEL": "auth.User", "PRODUCT_FIELDS": {"name": "username", "category": "groups__name"}}


def test_a_to_many_product_field_is_refused_by_name():
    shelf, sale = Group.objects.create(name="shelf"), Group.objects.create(name="sale")
    both = make_user("both")
    both.groups.add(shelf, sale)
    make_user("one").groups.add(shelf)
    with override_settings(RECOMMENDATIONS=recommendations_with(**USERS_AS_PRODUCTS)):
        errors = catalog.check_product_fields()
        with pytest.raises(CommandError) as refused:
            call_command("sync_products", "--no-progress")
    assert [e.id for e in errors] == ["recommendations.E009"]
    assert "'category'" in errors[0].msg and "'groups__name'" in errors[0].msg and "to-many" in errors[0].msg
    message = str(refused.value)
    assert "groups__name" in message and 'Values("groups__name", pick="all")' in message and "\n" not in message
    assert not ProductProfile.objects.exists(), "nothing was written"


def test_to_one_lookups_pass_and_a_reverse_relation_is_caught():
    from django.contrib.auth import get_user_model

    assert catalog.to_many_lookups(type(make_product("Kite")), {"category": "category__slug"}) == {}
    found = catalog.to_many_lookups(get_user_model(), {"brand": "logentry__object_repr", "name": "username"})
    assert found == {"brand": ("logentry__object_repr", "logentry")}


def test_sync_counts_products_not_joined_rows():
    for name in ("a", "b", "c"):
        make_user(name)
    with override_settings(RECOMMENDATIONS=recommendations_with(PRODUCT_MODEL="auth.User", PRODUCT_FIELDS={})):
        assert catalog.sync_products() == {"synced": 3, "deactivated": 0}
