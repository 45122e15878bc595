"""The ingest API end to end: real PostgreSQL for the events, real Redis for the throttles."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from recommendations import tracking
from recommendations.models import Event, ProductProfile
from tests.factories import make_user

pytestmark = pytest.mark.django_db

VISITOR = "0123456789abcdef0123456789abcdef"
OTHER_VISITOR = "fedcba9876543210fedcba9876543210"
WRITE_KEY = "s3cret-write-key-for-tests"


@pytest.fixture
def url() -> str:
    return reverse("recommendations:ingest")


@pytest.fixture
def browser(client: Client) -> Client:
    """An anonymous shopper whose visitor cookie is known."""
    client.cookies[settings.RECOMMENDATIONS.get("VISITOR_COOKIE_NAME", "rec_vid")] = VISITOR
    return client


@pytest.fixture
def products() -> list[str]:
    ids = ["p1", "p2", "p3"]
    ProductProfile.objects.bulk_create(ProductProfile(product_id=pid, name=pid) for pid in ids)
    return ids


@pytest.fixture
def write_key():
    with override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, "WRITE_KEY": WRITE_KEY}):
        yield WRITE_KEY


def post(client: Client, url: str, events: Any, **kwargs: Any):
    body = json.dumps({"events": events})
    return client.post(url, data=body, content_type=kwargs.pop("content_type", "application/json"), **kwargs)


def view(product_id: str = "p1", **fields: Any) -> dict[str, Any]:
    return {"event_type": "view", "product_id": product_id, **fields}


def key_headers(key: str = WRITE_KEY) -> dict[str, str]:
    return {"X-Recommendations-Key": key}


def rates(browser: str = "1000/min", key: str = "1000/min") -> dict[str, Any]:
    return {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"recommendations_ingest": browser, "recommendations_ingest_key": key},
    }


# --- accepting events -------------------------------------------------------------------------------------------


def test_valid_batch_is_stored_for_the_requesting_visitor(browser, url, products):
    events = [
        view("p1", event_id="e1"),
        {"event_type": "add_to_cart", "product_id": "p2", "quantity": 2, "value": "19.90", "event_id": "e2"},
        {"event_type": "search", "query": "red shoes", "event_id": "e3"},
    ]
    response = post(browser, url, events)
    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 3, "duplicates": 0, "errors": [], "unknown_products": [], "tracked": True}
    stored = {e.event_id: e for e in Event.objects.all()}
    assert set(stored) == {"e1", "e2", "e3"}
    assert all(e.visitor_id == VISITOR and e.user_id == "" and e.shopper == f"v:{VISITOR}" for e in stored.values())
    assert stored["e2"].quantity == 2 and stored["e2"].value == Decimal("19.90")
    assert stored["e3"].query == "red shoes" and stored["e3"].product_id == ""


def test_event_id_is_generated_when_absent(browser, url, products):
    response = post(browser, url, [view(), view()])
    assert response.json()["accepted"] == 2
    ids = list(Event.objects.values_list("event_id", flat=True))
    assert len(set(ids)) == 2 and all(ids)


def test_partial_batch_stores_the_valid_events_and_names_each_bad_field(browser, url, products):
    events = [
        view("p1", event_id="good-1"),
        {"event_type": "view"},
        {"event_type": "teleport", "product_id": "p1"},
        "not an object",
        view("p2", quantity=0),
        {"event_type": "search"},
        {"event_type": "click", "product_id": "p1"},
        view("p3", value="abc"),
        view("p3", event_id="good-2", quantity=3),
    ]
    response = post(browser, url, events)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    problems = {(e["index"], e["field"]) for e in body["errors"]}
    assert problems == {
        (1, "product_id"),
        (2, "event_type"),
        (3, None),
        (4, "quantity"),
        (5, "query"),
        (6, "placement"),
        (6, "recommendation_id"),
        (7, "value"),
    }
    assert all(e["message"] for e in body["errors"])
    assert set(Event.objects.values_list("event_id", flat=True)) == {"good-1", "good-2"}


def test_impression_and_click_keep_placement_recommendation_and_context(browser, url, products):
    events = [
        {"event_type": "impression", "product_id": "p1", "placement": "for_you", "recommendation_id": "r1",
         "context": {"rank": 1}},
        {"event_type": "click", "product_id": "p1", "placement": "for_you", "recommendation_id": "r1",
         "context": {"rank": 1}},
    ]  # fmt: skip
    assert post(browser, url, events).json()["accepted"] == 2
    click = Event.objects.get(event_type="click")
    assert (click.placement, click.recommendation_id, click.context) == ("for_you", "r1", {"rank": 1})


def test_replayed_batch_is_counted_as_duplicates(browser, url, products):
    events = [view("p1", event_id="r-1"), view("p2", event_id="r-2")]
    assert post(browser, url, events).json()["accepted"] == 2
    again = post(browser, url, events)
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 2, "errors": [], "unknown_products": [], "tracked": True}
    assert Event.objects.count() == 2


def test_duplicates_inside_one_batch(browser, url, products):
    events = [view("p1", event_id="same"), view("p2", event_id="same"), view("p3", event_id="other")]
    body = post(browser, url, events).json()
    assert (body["accepted"], body["duplicates"]) == (2, 1)
    assert Event.objects.get(event_id="same").product_id == "p1"


def test_unknown_products_are_kept_and_reported(browser, url, products):
    body = post(browser, url, [view("p1"), view("ghost-9"), view(42), view("ghost-9")]).json()
    assert body["accepted"] == 4
    assert body["unknown_products"] == ["ghost-9", "42"]
    assert Event.objects.filter(product_id="ghost-9").count() == 2


def test_stored_events_reach_the_hook_once(browser, url, products, monkeypatch):
    seen: list[list[str]] = []
    monkeypatch.setattr(tracking, "on_events_stored", lambda events: seen.append([e.event_id for e in events]))
    post(browser, url, [view(event_id="h1"), view(event_id="h2")])
    post(browser, url, [view(event_id="h1")])  # a pure replay stores nothing, so no call
    assert seen == [["h1", "h2"]]


def test_orm_fallback_counts_like_the_postgresql_path(products, monkeypatch):
    def build(eid: str) -> Event:
        return tracking.build_event("view", visitor_id=VISITOR, product_id="p1", event_id=eid)

    assert tracking.store_events([build("a"), build("b")]) == (2, 0)
    monkeypatch.setattr(connection, "vendor", "sqlite")  # the demo's backend takes the ORM path
    assert tracking.store_events([build("b"), build("c"), build("c")]) == (1, 2)
    assert set(Event.objects.values_list("event_id", flat=True)) == {"a", "b", "c"}


# --- refusing whole batches -------------------------------------------------------------------------------------


def test_malformed_json_is_400(browser, url):
    response = browser.post(url, data=b'{"events": [', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


def test_non_finite_numbers_are_not_json(browser, url):
    response = browser.post(url, data=b'{"events": [{"event_type": "view", "value": NaN}]}',
                            content_type="application/json")  # fmt: skip
    assert response.status_code == 400


@pytest.mark.parametrize("body", [[], {"event": []}, {"events": {}}, {"events": []}, "events"])
def test_body_that_is_not_a_batch_is_400(browser, url, body):
    response = browser.post(url, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"index": None, "field": "events", "message": response.json()["detail"]}]


def test_batch_with_no_valid_event_is_400_and_stores_nothing(browser, url, products):
    response = post(browser, url, [{"event_type": "view"}, {"product_id": "p1"}])
    assert response.status_code == 400
    body = response.json()
    assert body["accepted"] == 0
    assert {(e["index"], e["field"]) for e in body["errors"]} == {(0, "product_id"), (1, "event_type")}
    assert Event.objects.count() == 0


def test_too_many_events_is_413_and_the_limit_itself_is_fine(browser, url, products):
    assert post(browser, url, [view() for _ in range(501)]).status_code == 413
    assert Event.objects.count() == 0
    response = post(browser, url, [view() for _ in range(500)])
    assert response.status_code == 200 and response.json()["accepted"] == 500


def test_body_over_512_kb_is_413(browser, url, products):
    body = json.dumps({"events": [view()], "padding": "x" * (512 * 1024)})
    response = browser.post(url, data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "body"
    assert Event.objects.count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_content_types_a_form_can_send_are_refused(browser, url, products, content_type):
    response = browser.post(url, data=json.dumps({"events": [view()]}), content_type=content_type)
    assert response.status_code == 415
    assert Event.objects.count() == 0


def test_json_with_charset_is_accepted(browser, url, products):
    response = post(browser, url, [view()], content_type="application/json; charset=utf-8")
    assert response.status_code == 200


# --- who may write what -----------------------------------------------------------------------------------------


def test_browser_may_not_write_someone_elses_events(browser, url, products):
    events = [view(visitor_id=OTHER_VISITOR), view(user_id="7"), view(visitor_id=VISITOR, event_id="mine")]
    response = post(browser, url, events)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    assert {(e["index"], e["field"]) for e in body["errors"]} == {(0, "visitor_id"), (1, "user_id")}
    assert all("not yours" in e["message"] for e in body["errors"])
    assert list(Event.objects.values_list("event_id", flat=True)) == ["mine"]


def test_logged_in_shopper_gets_their_user_id_and_visitor_cookie(browser, url, products):
    user = make_user()
    browser.force_login(user)
    body = post(browser, url, [view(event_id="u1"), view(user_id=str(user.pk), event_id="u2")]).json()
    assert body["accepted"] == 2
    for event in Event.objects.all():
        assert (event.user_id, event.visitor_id, event.shopper) == (str(user.pk), VISITOR, f"u:{user.pk}")


def test_logged_in_beacon_needs_no_csrf_token(url, products):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user())
    assert post(client, url, [view()]).status_code == 200


def test_anonymous_without_cookie_gets_the_id_of_the_cookie_it_is_given(client, url, products):
    response = post(client, url, [view()])
    assert response.status_code == 200
    cookie = response.cookies["rec_vid"].value
    event = Event.objects.get()
    assert event.visitor_id == cookie and len(cookie) == 32 and event.user_id == ""


def test_write_key_may_write_any_shopper(client, url, products, write_key):
    events = [view(user_id="42"), view(visitor_id=OTHER_VISITOR), view(user_id=7, visitor_id=VISITOR), view()]
    response = post(client, url, events, headers=key_headers())
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 3
    assert body["errors"] == [
        {"index": 3, "field": "user_id", "message": body["errors"][0]["message"]},
    ]
    assert set(Event.objects.values_list("shopper", flat=True)) == {"u:42", f"v:{OTHER_VISITOR}", "u:7"}


def test_wrong_write_key_is_403(client, url, products, write_key):
    response = post(client, url, [view(user_id="42")], headers=key_headers("guess"))
    assert response.status_code == 403
    assert Event.objects.count() == 0


def test_write_key_header_when_no_key_is_configured_is_403(client, url, products):
    assert settings.RECOMMENDATIONS.get("WRITE_KEY", "") == ""
    assert post(client, url, [view(user_id="42")], headers=key_headers("")).status_code == 403
    assert post(client, url, [view(user_id="42")], headers=key_headers("anything")).status_code == 403


def test_foreign_origin_is_403_and_own_origin_is_fine(browser, url, products):
    assert post(browser, url, [view()], headers={"Origin": "https://evil.example"}).status_code == 403
    assert post(browser, url, [view()], headers={"Origin": "null"}).status_code == 403
    assert post(browser, url, [view()], headers={"Origin": "https://testserver"}).status_code == 403  # scheme counts
    assert Event.objects.count() == 0
    assert post(browser, url, [view()], headers={"Origin": "http://testserver"}).status_code == 200


@override_settings(CSRF_TRUSTED_ORIGINS=["https://shop.example"])
def test_csrf_trusted_origins_may_send(browser, url, products):
    assert post(browser, url, [view()], headers={"Origin": "https://shop.example"}).status_code == 200


# --- throttling -------------------------------------------------------------------------------------------------


def test_browser_is_throttled_with_retry_after(browser, url, products):
    with override_settings(REST_FRAMEWORK=rates(browser="3/min")):
        for _ in range(3):
            assert post(browser, url, [view()]).status_code == 200
        response = post(browser, url, [view()])
        assert response.status_code == 429
        assert 1 <= int(response["Retry-After"]) <= 80
        # Another shopper has a bucket of their own.
        other = Client()
        other.cookies["rec_vid"] = OTHER_VISITOR
        assert post(other, url, [view()]).status_code == 200
    assert Event.objects.count() == 4
    # Back at the normal rate the same shopper is let through: the rate is read per request, not frozen at import.
    assert post(browser, url, [view()]).status_code == 200


def test_write_key_has_its_own_rate(client, url, products, write_key):
    with override_settings(REST_FRAMEWORK=rates(browser="1/min", key="2/min")):
        assert post(client, url, [view(user_id="1")], headers=key_headers()).status_code == 200
        assert post(client, url, [view(user_id="1")], headers=key_headers()).status_code == 200
        response = post(client, url, [view(user_id="1")], headers=key_headers())
        assert response.status_code == 429 and int(response["Retry-After"]) >= 1


def test_refused_requests_do_not_extend_the_wait(browser, url, products):
    with override_settings(REST_FRAMEWORK=rates(browser="2/min")):
        assert post(browser, url, [view()]).status_code == 200
        assert post(browser, url, [view()]).status_code == 200
        waits = [int(post(browser, url, [view()])["Retry-After"]) for _ in range(5)]
    assert max(waits) - min(waits) <= 1


# --- field rules --------------------------------------------------------------------------------------------------


def stored_times(browser: Client, url: str, timestamp: Any) -> tuple[datetime, datetime | None, datetime]:
    eid = uuid.uuid4().hex
    response = post(browser, url, [view(event_id=eid, timestamp=timestamp)])
    assert response.status_code == 200, response.content
    event = Event.objects.get(event_id=eid)
    return event.occurred_at, event.client_time, event.received_at


def test_iso_timestamp_becomes_occurred_at(browser, url, products):
    occurred, client_time, _ = stored_times(browser, url, "2024-03-01T12:30:00Z")
    assert occurred == client_time == datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    occurred, _, _ = stored_times(browser, url, "2024-03-01T12:30:00+02:00")
    assert occurred == datetime(2024, 3, 1, 10, 30, tzinfo=UTC)
    occurred, _, _ = stored_times(browser, url, "2024-03-01T12:30:00")  # naive means UTC
    assert occurred == datetime(2024, 3, 1, 12, 30, tzinfo=UTC)


def test_unix_seconds_become_occurred_at(browser, url, products):
    moment = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    assert stored_times(browser, url, int(moment.timestamp()))[0] == moment
    assert stored_times(browser, url, moment.timestamp() + 0.5)[0] == moment + timedelta(seconds=0.5)
    assert stored_times(browser, url, str(int(moment.timestamp())))[0] == moment


def test_slightly_fast_clock_is_believed(browser, url, products):
    ahead = timezone.now() + timedelta(minutes=2)
    occurred, client_time, _ = stored_times(browser, url, ahead.isoformat())
    assert occurred == client_time == ahead


def test_far_future_timestamp_is_kept_at_receive_time(browser, url, products):
    before = timezone.now()
    occurred, client_time, received = stored_times(browser, url, "2999-01-01T00:00:00Z")
    assert client_time == datetime(2999, 1, 1, tzinfo=UTC)
    assert occurred == received and before <= occurred <= timezone.now()


@pytest.mark.parametrize("timestamp", ["yesterday", "2024-13-01T00:00:00Z", True, [1], 1e20, ""])
def test_garbage_timestamp_is_an_error_on_that_field(browser, url, products, timestamp):
    body = post(browser, url, [view(timestamp=timestamp), view()]).json()
    assert body["accepted"] == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "timestamp")]


def test_context_is_bounded(browser, url, products):
    body = post(browser, url, [view(context={"note": "x" * 3000}), view(context=[1]), view(context={"rank": 2})]).json()
    assert body["accepted"] == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "context"), (1, "context")]
    assert "2048" in body["errors"][0]["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", "x" * 65),
        ("event_id", ""),
        ("event_id", 5),
        ("product_id", "x" * 65),
        ("quantity", 1.5),
        ("quantity", True),
        ("quantity", "2"),
        ("value", "-1"),
        ("value", "1e12"),
        ("value", True),
        ("placement", "x" * 41),
        ("query", 7),
    ],
)
def test_bad_field_values_are_named(browser, url, products, field, value):
    body = post(browser, url, [{**view(), field: value}]).json()
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, field)]


def test_value_is_rounded_to_cents_and_nulls_mean_absent(browser, url, products):
    post(browser, url, [view(event_id="v1", value=12.345, quantity=None, query=None, context=None)])
    event = Event.objects.get(event_id="v1")
    assert (event.value, event.quantity, event.query, event.context) == (Decimal("12.35"), 1, "", {})


# --- the tracker snippet ------------------------------------------------------------------------------------------


def test_tracker_snippet_points_at_the_endpoint(url):
    html = render_to_string("recommendations/tracker.html")
    assert f'data-endpoint="{url}"' in html
    assert "recommendations/tracker.js" in html and "defer" in html


def test_a_full_batch_costs_two_queries(browser, url, products):
    """A guard against per-event queries creeping in: known products, then one INSERT, whatever the batch size."""
    events = [view(f"p{i % 3 + 1}") for i in range(500)]
    with CaptureQueriesContext(connection) as queries:
        response = post(browser, url, events)
    assert response.json()["accepted"] == 500
    event_queries = [q["sql"] for q in queries.captured_queries if "recommendations_" in q["sql"]]
    assert len(event_queries) == 2, event_queries
