"""What a host relies on keeps its name while the inside moves: the README's import paths, the template tags, the
commands, the Celery task names (messages already queued name them) and the URL names."""

from __future__ import annotations

import importlib

import pytest
from celery import current_app
from django.core.management import get_commands
from django.template import engines
from django.urls import reverse

README_NAMES = [
    ("recommendations.tracking", "VisitorMiddleware"),
    ("recommendations.tracking", "record_event"),
    ("recommendations.catalog", "profiles_changed"),
    ("recommendations.cache_backends", "RedisCache"),
    ("recommendations.serving", "recommend"),
    ("recommendations.product_fields", "Values"),
    ("recommendations.product_fields", "ProductAdapter"),
]
TASK_NAMES = {
    "recommendations.tasks.retrain",
    "recommendations.tasks.precompute",
    "recommendations.tasks.precompute_shard",
    "recommendations.tasks.finish_precompute",
    "recommendations.tasks.refresh_shoppers",
    "recommendations.tasks.refresh_shopper",
    "recommendations.tasks.refresh_analytics",
    "recommendations.tasks.apply_retention",
    "recommendations.tasks.send_due_messages",
}
COMMANDS = {
    "apply_retention",
    "export_recommendations",
    "import_catalog",
    "import_events",
    "precompute_recommendations",
    "refresh_analytics",
    "send_flows",
    "sync_products",
    "train_recommender",
}
TAGS = {"recommendations", "recommended_for_you", "similar_products", "trending_products"}


@pytest.mark.parametrize(("module", "name"), README_NAMES)
def test_every_name_the_readme_gives_still_imports(module: str, name: str) -> None:
    assert callable(getattr(importlib.import_module(module), name))


def test_the_celery_task_names_are_unchanged() -> None:
    importlib.import_module("recommendations.tasks")
    assert current_app.tasks.keys() >= TASK_NAMES


def test_the_management_commands_are_there() -> None:
    assert {name for name, app in get_commands().items() if app == "recommendations"} >= COMMANDS


def test_the_template_library_keeps_its_tags() -> None:
    library = engines["django"].engine.template_libraries["recommendations"]
    assert set(library.tags) >= TAGS


def test_the_url_names_resolve() -> None:
    assert reverse("recommendations:ingest") == "/api/events/"
    assert reverse("recommendations:recommendations", args=["for_you"]) == "/api/recommendations/for_you/"
    assert reverse("recommendations:email_click", args=["t"]) == "/e/c/t/"
    assert reverse("recommendations:email_unsubscribe", args=["t"]) == "/e/u/t/"
