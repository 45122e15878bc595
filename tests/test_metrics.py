"""`metrics/`: the serving histograms after a block renders, the event counters after an ingest, the task timings,
the health checks as gauges, who may scrape, and several processes added up (prometheus_client's multiprocess mode).

Counters only grow in a process, so each test reads them before and after and checks the difference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from recommendations import metrics, tasks
from recommendations.conf import rec_settings
from recommendations.models import ProductProfile, TrainingRun
from recommendations.serving import pipeline
from tests.factories import active_lists, make_small_shop, make_user, recommendations_with, render

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "a-monitoring-token-0123456789"
TRENDING = '{% load recommendations %}{% recommendations "trending" %}'


@pytest.fixture(autouse=True)
def _token(settings: Any) -> None:
    settings.RECOMMENDATIONS = recommendations_with(TASKS="inline", METRICS_TOKEN=TOKEN)


def scrape(**headers: str) -> str:
    response = Client(headers={"Authorization": f"Bearer {TOKEN}", **headers}).get(reverse("recommendations:metrics"))
    assert response.status_code == 200, response.content
    return response.content.decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def page_request() -> Any:
    request = RequestFactory().get("/")
    request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = uuid.uuid4().hex
    return request


@pytest.fixture
def trending_shop() -> dict[str, Any]:
    products = make_small_shop()
    active_lists(trending={"": [(p, 10.0 - i, "trending") for i, p in enumerate(products.values())]})
    return products


def test_rendering_a_block_adds_to_its_placement_histogram(trending_shop):
    before = scrape()

    html = render(TRENDING, page_request())

    after = scrape()
    assert "rec-block" in html
    built = {"placement": "trending", "outcome": "built"}
    assert (
        value(after, "recommendations_serving_seconds_count", **built)
        == value(before, "recommendations_serving_seconds_count", **built) + 1
    )
    assert value(after, "recommendations_serving_seconds_sum", **built) > value(
        before, "recommendations_serving_seconds_sum", **built
    )
    # The histogram's buckets: the block took more than nothing and less than forever.
    assert value(after, "recommendations_serving_seconds_bucket", le="+Inf", **built) == value(
        after, "recommendations_serving_seconds_count", **built
    )
    assert (
        value(after, "recommendations_blocks_total", placement="trending", source="stored")
        == value(before, "recommendations_blocks_total", placement="trending", source="stored") + 1
    )


def test_a_block_over_its_budget_counts_as_degraded_and_an_error_as_fallback(trending_shop, settings, monkeypatch):
    outcome = {"placement": "trending", "outcome": "degraded"}
    before = scrape()
    settings.RECOMMENDATIONS = recommendations_with(TASKS="inline", METRICS_TOKEN=TOKEN, SERVING_BUDGET_MS=1e-6)
    render(TRENDING, page_request())
    middle = scrape()
    assert (
        value(middle, "recommendations_serving_seconds_count", **outcome)
        == value(before, "recommendations_serving_seconds_count", **outcome) + 1
    )

    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("a store that cannot be read")

    monkeypatch.setattr(pipeline, "_build", broken)
    html = render(TRENDING, page_request())
    after = scrape()
    assert "rec-block" in html  # the safe fallback (best sellers) still shows a block
    fallback = {"placement": "trending", "outcome": "fallback"}
    assert (
        value(after, "recommendations_serving_seconds_count", **fallback)
        == value(middle, "recommendations_serving_seconds_count", **fallback) + 1
    )
    assert (
        value(after, "recommendations_blocks_total", placement="trending", source="fallback")
        == value(middle, "recommendations_blocks_total", placement="trending", source="fallback") + 1
    )


def test_an_ingest_counts_accepted_refused_and_duplicated_events():
    ProductProfile.objects.create(product_id="p1", name="p1")
    browser = Client()
    browser.cookies[rec_settings.VISITOR_COOKIE_NAME] = uuid.uuid4().hex
    events = [
        {"event_id": uuid.uuid4().hex, "event_type": "view", "product_id": "p1"},
        {"event_id": uuid.uuid4().hex, "event_type": "favorite", "product_id": "p1"},
        {"event_type": "not-a-type", "product_id": "p1"},
    ]

    def post(batch: list[dict[str, Any]]) -> Any:
        return browser.post(
            reverse("recommendations:ingest"), data=json.dumps({"events": batch}), content_type="application/json"
        )

    before = scrape()
    first = post(events)
    replay = post(events[:2])
    refused_whole = post([])
    after = scrape()

    assert first.status_code == 200 and first.json()["accepted"] == 2, first.content
    assert replay.json()["duplicates"] == 2 and refused_whole.status_code == 400

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("recommendations_events_accepted_total", via="api") == 2
    assert grew("recommendations_events_duplicated_total", via="api") == 2
    assert grew("recommendations_events_refused_total", via="api", reason="invalid") == 1
    assert grew("recommendations_ingest_requests_total", status="200") == 2
    assert grew("recommendations_ingest_requests_total", status="400") == 1


def test_tasks_are_timed_and_their_failures_counted(monkeypatch):
    before = scrape()
    tasks.refresh_analytics.apply()

    def broken(shopper: str) -> None:
        raise RuntimeError("the refresh failed")

    from recommendations.lists import refresh

    monkeypatch.setattr(refresh, "refresh_shopper", broken)
    # As a worker runs it: the error is the task's outcome, not raised into the caller.
    result = tasks.refresh_shopper.apply(args=["u:1"], throw=False)
    after = scrape()
    assert result.failed()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("recommendations_task_seconds_count", task="refresh_analytics", state="success") == 1
    assert grew("recommendations_task_seconds_count", task="refresh_shopper", state="failure") == 1
    assert grew("recommendations_task_failures_total", task="refresh_shopper") == 1
    assert grew("recommendations_task_failures_total", task="refresh_analytics") == 0


def test_the_health_checks_and_the_ages_are_gauges_at_scrape_time():
    TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED, is_serving=True, finished_at=timezone.now() - timedelta(hours=3)
    )
    text = scrape()
    assert value(text, "recommendations_health_ok", check="database") == 1
    assert value(text, "recommendations_health_ok", check="list_set") == 0  # nothing precomputed
    assert 2.9 * 3600 < value(text, "recommendations_serving_model_age_seconds") < 3.1 * 3600
    assert "recommendations_list_set_age_seconds" not in text

    active_lists()
    assert value(scrape(), "recommendations_health_ok", check="list_set") == 1


def test_openmetrics_when_the_scraper_asks_for_it():
    response = Client(headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/openmetrics-text"}).get(
        reverse("recommendations:metrics")
    )
    body = response.content.decode()
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert body.count("# EOF") == 1 and body.rstrip().endswith("# EOF")
    assert "recommendations_health_ok" in body
    assert Client().get(reverse("recommendations:metrics"))["Content-Type"] != response["Content-Type"]


def test_only_staff_and_the_token_may_scrape(client):
    url = reverse("recommendations:metrics")
    shopper = Client()
    shopper.force_login(make_user())
    staff = Client()
    staff.force_login(make_user(is_staff=True))
    wrong = Client(headers={"Authorization": "Bearer not-the-token-at-all-00000"})
    basic = Client(headers={"Authorization": f"Basic {TOKEN}"})

    for refused in (client, shopper, wrong, basic):
        response = refused.get(url)
        assert response.status_code == 403
        assert "recommendations_" not in response.content.decode()
    assert staff.get(url).status_code == 200
    assert "recommendations_serving_seconds" in scrape()


def test_the_token_is_refused_when_none_is_set(settings):
    settings.RECOMMENDATIONS = recommendations_with(TASKS="inline", METRICS_TOKEN="")
    assert Client(headers={"Authorization": "Bearer "}).get(reverse("recommendations:metrics")).status_code == 403


COUNT_IN_A_PROCESS = """
import sys
from recommendations import metrics
metrics.count_events("api", accepted=int(sys.argv[1]), duplicated=1)
metrics.observe_block("for_you", "built", "stored", 0.0)
"""


def test_several_processes_add_up_in_multiprocess_mode(tmp_path, monkeypatch):
    """Two processes (two gunicorn workers) count into PROMETHEUS_MULTIPROC_DIR; any process' scrape adds them up."""
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for accepted in (3, 4):
        subprocess.run([sys.executable, "-c", COUNT_IN_A_PROCESS, str(accepted)], env=environment, check=True)
    assert len(list(tmp_path.glob("*.db"))) >= 2, "each process wrote its own file"

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = scrape()

    assert value(text, "recommendations_events_accepted_total", via="api") == 7
    assert value(text, "recommendations_events_duplicated_total", via="api") == 2
    assert value(text, "recommendations_serving_seconds_count", placement="for_you", outcome="built") == 2
    assert value(text, "recommendations_health_ok", check="database") == 1  # the scrape-time gauges still come
    assert metrics.totals()["recommendations_events_accepted_total"] == [({"via": "api"}, 7.0)]


def test_the_app_needs_no_middleware_for_its_metrics():
    assert not [m for m in settings.MIDDLEWARE if "prometheus" in m.lower()]
    assert "django_prometheus" not in settings.INSTALLED_APPS
