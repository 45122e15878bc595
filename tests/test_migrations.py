"""The data migrations: 0009 moves built-in placement rows still on the old fallback and leaves edited ones."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps as django_apps

from recommendations.models import Placement
from tests.factories import make_small_shop

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    return make_small_shop()


def tune(name: str, **fields) -> None:
    row = Placement.objects.get(name=name)
    for key, value in fields.items():
        setattr(row, key, value)
    row.save()


def test_the_data_migration_moves_built_in_rows_still_on_the_old_fallback_and_leaves_edited_ones(shop):
    migration = importlib.import_module("recommendations.migrations.0009_placement_fallbacks_without_repeats")
    old_together, new_together = migration.CHANGES["bought_together"]
    tune("bought_together", fallback=old_together)
    tune("for_you", fallback=["popular", "trending"])  # staff chose this one
    migration.forwards(django_apps, None)
    assert Placement.objects.get(name="bought_together").fallback == new_together == []
    assert Placement.objects.get(name="for_you").fallback == ["popular", "trending"]
    tune("for_you", fallback=migration.CHANGES["for_you"][0])
    migration.forwards(django_apps, None)
    assert Placement.objects.get(name="for_you").fallback == ["rules", "popular"]
