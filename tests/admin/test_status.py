"""*Recommendations > System status*: linked from the app's admin index, the same checks as `health/` with the facts
behind them (serving model, last training run and precompute, active set, today's events, the counters), staff only."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recommendations import serving
from recommendations.models import PrecomputeRun, TrainingRun
from tests.factories import active_lists, make_event, make_small_shop, make_user, recommendations_with

pytestmark = pytest.mark.django_db

STATUS = "admin:recommendations_status"


@pytest.fixture(autouse=True)
def _inline(settings) -> None:
    settings.RECOMMENDATIONS = recommendations_with(TASKS="inline")


def check_state(html: str, name: str) -> str:
    row = re.search(rf'<tr data-check="{name}">(.*?)</tr>', html, re.S)
    assert row, f"no row for {name}"
    return "OK" if 'class="rec-ok"' in row.group(1) else "Failing"


def test_the_app_index_links_to_the_status_page(staff_client):
    html = staff_client.get(reverse("admin:app_list", args=["recommendations"])).content.decode()
    assert f'href="{reverse(STATUS)}"' in html
    assert "System status" in html


def test_the_page_shows_each_check_and_the_facts_behind_them(staff_client):
    products = make_small_shop()
    serving_run = TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED,
        is_serving=True,
        chosen="ease",
        finished_at=timezone.now() - timedelta(hours=200),
    )
    TrainingRun.objects.create(status=TrainingRun.Status.FAILED, message="Not enough events to train on.")
    done = PrecomputeRun.objects.create(status=PrecomputeRun.Status.SUCCEEDED, finished_at=timezone.now())
    active_lists(trending={"": [(p, 1.0, "trending") for p in products.values()]})
    for _ in range(3):
        make_event("view", product_id=str(next(iter(products.values())).pk))
    serving.recommend("trending", shopper="v:" + "a" * 32)
    staff_client.post(
        reverse("recommendations:ingest"),
        data=json.dumps({"events": [{"event_type": "view", "product_id": "p1"}, {"event_type": "no-such-type"}]}),
        content_type="application/json",
    )

    response = staff_client.get(reverse(STATUS))

    assert response.status_code == 200
    html = response.content.decode()
    assert check_state(html, "database") == "OK"
    assert check_state(html, "cache") == "OK"
    assert check_state(html, "list_set") == "OK"
    assert check_state(html, "serving_model") == "Failing"  # 200 h old, over the default 168 h
    assert "One check fails: serving_model" in html
    assert f"Training run #{serving_run.pk}" in html and "(ease)" in html
    assert "Not enough events to train on." in html  # the newest training run, failed
    assert f"Precompute #{done.pk}" in html
    events_today = re.search(r'<table id="rec-events-today">(.*?)</table>', html, re.S).group(1)
    # three made here, one through the API
    assert re.search(r"<th scope=\"row\">view</th><td class=\"num\">4</td>", events_today), events_today
    assert re.search(r'<tr data-outcome="built"><td><code>built</code></td><td class="num">[1-9]', html)
    api = re.search(r'<tr data-via="api">(.*?)</tr>', html, re.S).group(1)
    accepted, _duplicated, refused = re.findall(r'<td class="num">(\d+)</td>', api)
    assert int(accepted) >= 1 and int(refused) >= 1


def test_staff_only(client):
    url = reverse(STATUS)
    assert client.get(url).status_code == 302  # to the admin's login
    shopper = Client()
    shopper.force_login(make_user())
    assert shopper.get(url).status_code == 302
    staff = Client()
    staff.force_login(make_user(is_staff=True))  # no permission of the app: the page shows health, not data
    assert staff.get(url).status_code == 200
