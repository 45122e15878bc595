"""Issue 17, "Safety": one visitor's timestamp cannot stop learning, a refused serving model costs only the for_you
lists, and an unreachable database is a 503 from the API, not an empty 200. Real PostgreSQL throughout; the outage is
a real connection to a closed port."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.template import Context, Template
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone

from recommendations.lists import serving_model
from recommendations.lists.precompute import run_precompute
from recommendations.lists.refresh import refresh_shopper
from recommendations.models import Event, PrecomputeRun, ProductProfile, RecommendationSet, StoredList, TrainingRun
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import T_END, write_shop

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"),
]

VISITOR = "0123456789abcdef0123456789abcdef"
WRITE_KEY = "s3cret-write-key-for-tests"
FAST = ["popularity", "item_knn"]
# The request of the issue: PostgreSQL stores it as 0001-12-31 19:00:00+00 BC, which Python cannot read back.
YEAR_ONE = "0001-01-01T00:00:00+05:00"


@pytest.fixture
def browser(client: Client) -> Client:
    client.cookies[settings.RECOMMENDATIONS.get("VISITOR_COOKIE_NAME", "rec_vid")] = VISITOR
    return client


@pytest.fixture
def products() -> list[str]:
    ids = ["p1", "p2"]
    ProductProfile.objects.bulk_create(ProductProfile(product_id=pid, name=pid) for pid in ids)
    return ids


def post(client: Client, events: list, **kwargs):
    return client.post(
        reverse("recommendations:ingest"),
        data=json.dumps({"events": events}),
        content_type="application/json",
        **kwargs,
    )


def settings_with(**override):
    return override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, **override})


# -- 1. the timestamp window ------------------------------------------------------------------------------------------


def test_the_issues_request_from_a_browser_is_a_400_naming_the_event_and_its_timestamp(browser, products):
    response = post(browser, [{"event_type": "view", "product_id": "p1", "timestamp": YEAR_ONE}])

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["accepted"] == 0
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "timestamp")]
    assert not Event.objects.exists()


def test_the_write_key_batch_stores_the_good_events_and_names_each_out_of_window_one(client, products):
    now = timezone.now()
    too_old = (now - timedelta(days=3650 + 2)).isoformat()
    inside = (now - timedelta(days=3650 - 2)).isoformat()
    events = [
        {"event_type": "view", "product_id": "p1", "user_id": "7", "timestamp": YEAR_ONE},
        {"event_type": "view", "product_id": "p1", "user_id": "7", "timestamp": inside, "event_id": "kept"},
        {"event_type": "view", "product_id": "p2", "user_id": "7", "timestamp": too_old},
        {"event_type": "view", "product_id": "p2", "user_id": "7", "timestamp": -62135596800},  # 0001-01-01 UTC
    ]
    with settings_with(WRITE_KEY=WRITE_KEY):
        response = post(client, events, headers={"X-Recommendations-Key": WRITE_KEY})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "timestamp"), (2, "timestamp"), (3, "timestamp")]
    assert "EVENT_MAX_AGE_DAYS" in body["errors"][1]["message"]
    assert list(Event.objects.values_list("event_id", flat=True)) == ["kept"]


def test_the_window_follows_the_setting(browser, products):
    ten_days_ago = (timezone.now() - timedelta(days=10)).isoformat()
    with settings_with(EVENT_MAX_AGE_DAYS=5):
        refused = post(browser, [{"event_type": "view", "product_id": "p1", "timestamp": ten_days_ago}])
    accepted = post(browser, [{"event_type": "view", "product_id": "p1", "timestamp": ten_days_ago}])
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "timestamp"
    assert accepted.status_code == 200 and Event.objects.count() == 1


def test_a_bad_window_setting_is_a_check_error():
    from recommendations.conf import check_settings

    with settings_with(EVENT_MAX_AGE_DAYS=0):
        errors = [error for error in check_settings() if "EVENT_MAX_AGE_DAYS" in error.msg]
    assert [error.id for error in errors] == ["recommendations.E006"]


def import_events(tmp_path: Path, text: str, *args: str) -> tuple[str, str]:
    path = tmp_path / "events.csv"
    path.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_events", str(path), "--no-progress", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_import_events_refuses_out_of_window_rows_one_line_each(tmp_path):
    recent = (timezone.now() - timedelta(days=3)).isoformat()
    ancient = (timezone.now() - timedelta(days=3650 + 30)).isoformat()
    text = (
        "event_id,user_id,product_id,event_type,timestamp\n"
        f"good,7,p1,view,{recent}\n"
        f"bc,7,p1,view,{YEAR_ONE}\n"
        f"old,7,p1,view,{ancient}\n"
    )
    with pytest.raises(CommandError) as caught:  # a non-zero exit: nothing written without --skip-invalid
        import_events(tmp_path, text)
    lines = [line for line in str(caught.value).splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in lines] == ["line 3", "line 4"]
    assert all("timestamp" in line for line in lines) and "EVENT_MAX_AGE_DAYS" in lines[1]
    assert not Event.objects.exists()

    out, err = import_events(tmp_path, text, "--skip-invalid")
    assert list(Event.objects.values_list("event_id", flat=True)) == ["good"]
    assert "2 invalid rows skipped" in out
    assert "line 3: timestamp" in err and "line 4: timestamp" in err


# -- 1. rows already stored before the window existed ----------------------------------------------------------------


@pytest.fixture
def shop():
    data, features = make_shop(n_shoppers=200, n_items=80, seed=1)
    write_shop(data, features)
    return data, features


def store_unreadable_rows() -> str:
    """A view and a purchase at 1 BC and a view in the year 10000, as raw SQL can store them; returns the shopper."""
    shopper = Event.objects.filter(event_type="view").values_list("shopper", flat=True).first()
    product = ProductProfile.objects.values_list("product_id", flat=True).first()
    for event_id, event_type in (("bc-view", "view"), ("bc-buy", "purchase"), ("far-view", "view")):
        Event.objects.create(event_id=event_id, event_type=event_type, shopper=shopper, product_id=product)
    table = connection.ops.quote_name(Event._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET occurred_at = '0001-12-31 19:00:00+00 BC', client_time = '0001-12-31 19:00:00+00 BC' "
            "WHERE event_id IN ('bc-view', 'bc-buy')"
        )
        cursor.execute(f"UPDATE {table} SET occurred_at = '10000-01-01 00:00:00+00' WHERE event_id = 'far-view'")
    with pytest.raises(ValueError, match="out of range"):  # what stopped every run before
        list(Event.objects.filter(event_id="bc-view").values_list("occurred_at", flat=True))
    return shopper


def test_training_and_precompute_skip_and_report_rows_whose_time_cannot_be_read(shop, caplog):
    shopper = store_unreadable_rows()
    caplog.set_level(logging.WARNING)

    run = training.run_training(candidates=FAST)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.data_stats["cleaning"]["unreadable_time_skipped"] == 3
    assert run.data_until == T_END  # the year 10000 row did not become "the newest event"
    assert "training leaves out 3 events" in caplog.text

    out = io.StringIO()
    call_command("precompute_recommendations", "--no-progress", stdout=out)
    precompute = PrecomputeRun.objects.order_by("-pk").first()  # training queued one too, never run here
    assert precompute.status == PrecomputeRun.Status.SUCCEEDED, precompute.error
    assert precompute.stats["unreadable_events_skipped"] == 3
    assert "3 events were left out" in precompute.error
    assert "warning: 3 events were left out" in out.getvalue()
    assert precompute.stats["lists"]["for_you"] > 0

    # The near-real-time refresh of the shopper who owns the rows reads them too.
    assert refresh_shopper(shopper) > 0


# -- 2. a refused serving model ---------------------------------------------------------------------------------------


def lists_of(set_id: int, placement: str) -> dict[str, list]:
    return dict(
        StoredList.objects.filter(recommendation_set_id=set_id, placement=placement).values_list("subject", "items")
    )


def placements(set_id: int) -> set[str]:
    return set(StoredList.objects.filter(recommendation_set_id=set_id).values_list("placement", flat=True))


def test_a_refused_serving_model_still_refreshes_the_shared_lists_and_keeps_the_for_you_ones(
    shop, staff_client, caplog
):
    model_run = training.run_training(candidates=FAST)
    good = run_precompute()
    old_for_you = lists_of(good.recommendation_set_id, "for_you")
    old_trending = lists_of(good.recommendation_set_id, "trending")[""]
    assert old_for_you
    # A product nobody looked at becomes the shop's most viewed, after everything else.
    cold = ProductProfile.objects.exclude(product_id__in=[i[0] for i in old_trending]).values_list(
        "product_id", flat=True
    )[0]
    Event.objects.bulk_create(
        Event(event_id=f"hot{n}", event_type="view", shopper=f"v:hot{n}", product_id=cold, occurred_at=T_END)
        for n in range(60)
    )
    victim = sorted(Path(model_run.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated
    serving_model.forget()
    caplog.set_level(logging.ERROR)

    run = run_precompute()

    assert run.status == PrecomputeRun.Status.SUCCEEDED, run.error
    new_set = run.recommendation_set
    assert new_set.pk != good.recommendation_set_id and new_set.status == RecommendationSet.Status.ACTIVE
    assert lists_of(new_set.pk, "trending")[""][0][0] == cold  # shared lists are new
    assert lists_of(new_set.pk, "for_you") == old_for_you  # for_you lists are the old ones, all of them
    assert placements(new_set.pk) == placements(good.recommendation_set_id)
    refused = run.stats["model_refused"]
    assert refused["training_run"] == model_run.pk and refused["kept_from_set"] == good.recommendation_set_id
    assert refused["for_you_lists"] == len(old_for_you) == run.stats["lists"]["for_you"]
    assert f"training run #{model_run.pk}) was refused" in run.error
    assert "was refused" in caplog.text
    assert "kept from set" in new_set.algorithm
    page = staff_client.get(reverse("admin:recommendations_precomputerun_change", args=[run.pk]))
    assert f"training run #{model_run.pk}) was refused" in page.content.decode()

    # The next run keeps them again, from the set this one made.
    again = run_precompute()
    assert again.stats["model_refused"]["kept_from_set"] == new_set.pk
    assert lists_of(again.recommendation_set_id, "for_you") == old_for_you


# -- 3. the database unreachable --------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def database_unreachable() -> Iterator[None]:
    """The default connection, for this block, is a real PostgreSQL connection to a port nobody listens on."""
    original = connections["default"]
    dead = original.__class__({**original.settings_dict, "HOST": "127.0.0.1", "PORT": str(closed_port())}, "default")
    connections["default"] = dead
    try:
        yield
    finally:
        dead.close()
        connections["default"] = original


def test_the_recommendations_api_answers_503_with_retry_after_when_the_database_is_unreachable(client):
    url = reverse("recommendations:recommendations", args=["trending"])
    assert client.get(url).status_code == 200

    with database_unreachable():
        response = client.get(url)
        assert response.status_code == 503, response.content  # was a 200 with an empty block
        with_product = client.get(url, {"product": "p1"})  # a query the view makes itself: was a 500

    assert int(response["Retry-After"]) > 0
    body = response.json()
    assert "temporarily unavailable" in body["detail"]
    assert body["errors"] == [{"field": None, "message": body["detail"]}]
    assert with_product.status_code == 503 and with_product["Retry-After"]
    assert client.get(url).status_code == 200  # and back once it is


def test_a_page_still_renders_without_the_block_when_the_database_is_unreachable():
    request = RequestFactory().get("/")
    template = Template('{% load recommendations %}[{% recommendations "trending" %}]')
    with database_unreachable():
        rendered = template.render(Context({"request": request}))
    assert "".join(rendered.split()) == "[]"


def test_event_ingest_answers_503_when_the_database_is_unreachable(browser):
    with database_unreachable():
        response = post(browser, [{"event_type": "view", "product_id": "p1"}])
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0
    assert response.json()["errors"][0]["index"] is None
