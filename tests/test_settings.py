"""Settings: the RECOMMENDATIONS system check and the hardened production settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from recommendations.conf import check_settings, rec_settings

ROOT = Path(__file__).resolve().parent.parent
GOOD = {
    "PRODUCT_MODEL": "shop.Product",
    "PRODUCT_FIELDS": {"category": "category__slug", "price": "price"},
}


def _ids(errors):
    return sorted(e.id for e in errors)


def test_demo_settings_pass_the_check():
    assert check_settings() == []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({**GOOD, "PRODUCT_MODLE": "shop.Product"}, ["recommendations.E002"]),
        ({**GOOD, "PRODUCT_MODEL": "shop.Nope"}, ["recommendations.E003"]),
        ({**GOOD, "PRODUCT_MODEL": "Product"}, ["recommendations.E003"]),
        ({**GOOD, "PRODUCT_FIELDS": {"colour": "colour"}}, ["recommendations.E004"]),
        ({**GOOD, "EVENT_WEIGHTS": {"teleport": 2}}, ["recommendations.E005"]),
        ({**GOOD, "EVENT_WEIGHTS": {"view": -1}}, ["recommendations.E005"]),
        ({**GOOD, "RECENCY_HALF_LIFE_DAYS": 0}, ["recommendations.E006"]),
        ({**GOOD, "TOP_N": "50"}, ["recommendations.E006"]),
        ({**GOOD, "RETRAIN_SECONDS": 0}, ["recommendations.E006"]),
        ({**GOOD, "RETRAIN_SECONDS": "2 minutes"}, ["recommendations.E006"]),
        ({**GOOD, "SESSION_WEIGHT": 1.5}, ["recommendations.E008"]),
        ({**GOOD, "PLACEMENTS": {"for_yuo": {"size": 4}}}, ["recommendations.E008"]),
        ({**GOOD, "PLACEMENTS": {"similar": {"size": 0}}}, ["recommendations.E008"]),
        ({**GOOD, "PLACEMENTS": {"similar": {"fallback": ["trending", "bestsellers"]}}}, ["recommendations.E008"]),
        ({**GOOD, "PLACEMENTS": {"similar": {"colour": "red"}}}, ["recommendations.E008"]),
    ],
)
def test_check_reports_each_mistake(override, expected):
    with override_settings(RECOMMENDATIONS=override):
        assert _ids(check_settings()) == expected


def test_partial_event_weights_keep_the_other_defaults():
    with override_settings(RECOMMENDATIONS={**GOOD, "EVENT_WEIGHTS": {"view": 2.5}}):
        weights = rec_settings.EVENT_WEIGHTS
    assert weights["view"] == 2.5
    assert weights["purchase"] == 8.0


def test_a_partial_placement_override_keeps_the_other_keys_and_placements():
    with override_settings(RECOMMENDATIONS={**GOOD, "PLACEMENTS": {"similar": {"size": 4}}}):
        assert check_settings() == []
        placements = rec_settings.PLACEMENTS
    assert placements["similar"]["size"] == 4
    assert placements["similar"]["max_per_brand"] == 3
    assert placements["similar"]["title"] == "Similar products"
    assert set(placements) == {"for_you", "similar", "bought_together", "trending", "recently_viewed", "buy_again"}


def _production_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE="shop.settings_production", DJANGO_ALLOWED_HOSTS="shop.example.com", **extra)
    return env


def test_production_settings_pass_check_deploy():
    env = _production_env(DJANGO_SECRET_KEY="x" * 20 + "-a-long-random-production-secret-key-0123456789")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_the_demo_secret_key():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
