"""Text PostgreSQL cannot store (NUL, lone UTF-16 surrogates) or that is too long is refused per field: the batch's
other events are stored and the answer names each bad event and field. Before, one NUL answered 500 and lost the batch.
Real PostgreSQL: it is the database that refuses these characters.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse

from recommendations.models import Event, ProductProfile

pytestmark = pytest.mark.django_db

WRITE_KEY = "s3cret-write-key-for-tests"
NUL = "a\u0000b"
SURROGATE = "a\ud800b"  # half of a UTF-16 pair: valid in a JSON string, not in UTF-8


@pytest.fixture(autouse=True)
def write_key():
    with override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, "WRITE_KEY": WRITE_KEY}):
        yield


@pytest.fixture(autouse=True)
def products() -> None:
    ProductProfile.objects.bulk_create(ProductProfile(product_id=pid, name=pid) for pid in ("p1", "p2"))


def post(client: Client, events: list[Any]):
    # json.dumps escapes both as \u0000 and \ud800, as a JavaScript or Java client would send them.
    return client.post(
        reverse("recommendations:ingest"),
        data=json.dumps({"events": events}),
        content_type="application/json",
        headers={"X-Recommendations-Key": WRITE_KEY},
    )


def view(n: int, **fields: Any) -> dict[str, Any]:
    return {"event_type": "view", "product_id": "p1", "user_id": "7", "event_id": f"e{n}", **fields}


def test_the_issues_batch_stores_its_valid_events_and_names_the_nul_query():
    events = [view(0), {"event_type": "search", "user_id": "7", "event_id": "e1", "query": NUL}, view(2)]
    response = post(Client(), events)
    assert response.status_code == 200, response.content  # was a 500, and e0 and e2 were lost
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "query")]
    assert "NUL" in body["errors"][0]["message"]
    assert set(Event.objects.values_list("event_id", flat=True)) == {"e0", "e2"}


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    "field",
    ["event_id", "product_id", "user_id", "visitor_id", "query", "placement", "recommendation_id", "timestamp"],
)
def test_each_text_field_refuses_what_postgresql_cannot_store(field, bad):
    events = [view(0), view(1, **{field: bad}), view(2)]
    response = post(Client(), events)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, field)]
    assert set(Event.objects.values_list("event_id", flat=True)) == {"e0", "e2"}


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    "context",
    [
        lambda bad: {"note": bad},
        lambda bad: {bad: 1},
        lambda bad: {"list": [1, {"deep": [bad]}]},
    ],
    ids=["value", "key", "nested"],
)
def test_context_refuses_them_anywhere_inside(context, bad):
    response = post(Client(), [view(0, context=context(bad)), view(1, context={"rank": 2, "note": "fine ü 中"})])
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "context")]
    assert Event.objects.get().context == {"rank": 2, "note": "fine ü 中"}


@pytest.mark.parametrize(
    ("field", "most"),
    [
        ("event_id", 64),
        ("product_id", 64),
        ("user_id", 64),
        ("visitor_id", 64),
        ("placement", 40),
        ("recommendation_id", 64),
        ("query", 10_000),
    ],
)
def test_over_long_strings_are_refused_per_field_and_the_longest_accepted_one_is_stored(field, most):
    longest = "x" * most
    events = [view(0, **{field: longest}), view(1, **{field: longest + "x"})]
    if field == "event_id":
        events[0]["event_id"] = longest
    response = post(Client(), events)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, field)]
    assert str(most) in body["errors"][0]["message"]
    assert Event.objects.count() == 1


def test_a_batch_of_only_bad_text_is_a_400_that_stores_nothing():
    response = post(Client(), [view(0, query=NUL), view(1, product_id=SURROGATE)])
    assert response.status_code == 400
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(0, "query"), (1, "product_id")]
    assert not Event.objects.exists()


def test_other_control_characters_and_astral_characters_are_kept():
    """Only what the database cannot hold is refused: a tab, an emoji (a surrogate pair in JSON) are text."""
    response = post(Client(), [{"event_type": "search", "user_id": "7", "event_id": "s", "query": "a\tb 😀"}])
    assert response.status_code == 200, response.content
    assert Event.objects.get().query == "a\tb 😀"
