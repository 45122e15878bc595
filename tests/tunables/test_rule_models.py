"""ColdStartRule and MerchandisingRule share their common fields through the abstract `AbstractRule`, and that move
changed no schema: every field still deconstructs exactly as the migrations built it, and the shared manager and
`__str__` work on both."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from recommendations.models import AbstractRule, ColdStartRule, MerchandisingRule

SHARED = {
    "name",
    "active",
    "placements",
    "price_min",
    "price_max",
    "starts_at",
    "ends_at",
    "created_at",
    "updated_at",
    "updated_by",
}


def _deconstructed(fields) -> dict[str, tuple]:
    out = {}
    for name, field in fields:
        _, path, args, kwargs = field.deconstruct()
        out[name] = (path, args, kwargs)
    return out


@pytest.mark.parametrize("model", [ColdStartRule, MerchandisingRule])
def test_the_fields_are_the_migrated_ones(model):
    state = MigrationLoader(None, ignore_no_migrations=True).project_state()
    migrated = state.models["recommendations", model._meta.model_name]

    current = _deconstructed((f.name, f) for f in model._meta.local_fields)

    assert current == _deconstructed(migrated.fields.items())
    assert model._meta.db_table == migrated.options.get("db_table", f"recommendations_{model._meta.model_name}")
    assert model._meta.ordering == migrated.options["ordering"]


def test_the_shared_fields_live_on_the_abstract_base():
    assert AbstractRule._meta.abstract
    assert {f.name for f in AbstractRule._meta.fields} == SHARED
    for model in (ColdStartRule, MerchandisingRule):
        assert issubclass(model, AbstractRule)
        assert {f.name for f in model._meta.fields} >= SHARED
    # priority means "which rule wins" on one and "which applies last" on the other, so each keeps its own.
    priorities = {model._meta.get_field("priority").help_text for model in (ColdStartRule, MerchandisingRule)}
    assert len(priorities) == 2


@pytest.mark.django_db
def test_live_and_str_work_on_both_rules():
    now = timezone.now()
    for model, fields in (
        (ColdStartRule, {}),
        (MerchandisingRule, {"action": "boost", "target": "product", "target_value": "p1"}),
    ):
        model.objects.create(name="always", **fields)
        model.objects.create(name="later", starts_at=now + timedelta(days=1), **fields)
        model.objects.create(name="over", ends_at=now - timedelta(days=1), **fields)
        model.objects.create(name="off", active=False, **fields)

        assert [str(rule) for rule in model.objects.live(now)] == ["always"]
        assert sorted(str(rule) for rule in model.objects.live(now + timedelta(days=2))) == ["always", "later"]
