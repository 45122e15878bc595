"""The recommendations API and its OpenAPI docs, over a real precompute on PostgreSQL and throttles in Redis."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from recommendations import catalog, serving, tracking
from recommendations.lists.precompute import run_precompute
from recommendations.models import Event
from tests.factories import make_brand, make_category, make_product, make_user

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
WRITE_KEY = "s3cret-write-key-for-tests"
COOKIE = "rec_vid"
ITEM_FIELDS = {
    "product_id",
    "name",
    "url",
    "price",
    "category",
    "brand",
    "score",
    "reason",
    "reason_text",
    "rank",
}


def url(placement: str = "for_you") -> str:
    return reverse("recommendations:recommendations", args=[placement])


def fetch(client: Client, placement: str = "for_you", headers: dict[str, str] | None = None, **params: Any):
    """GET the block; the test Client closes the response, which is when the impression is written."""
    return client.get(url(placement), params, headers=headers or {})


def browser(visitor: str | None = None) -> Client:
    client = Client()
    if visitor:
        client.cookies[COOKIE] = visitor
    return client


def ids(body: dict[str, Any]) -> list[str]:
    return [item["product_id"] for item in body["items"]]


def error_fields(response) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


@pytest.fixture
def write_key():
    with override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, "WRITE_KEY": WRITE_KEY}):
        yield {"X-Recommendations-Key": WRITE_KEY}


@pytest.fixture
def shop():
    """Hammer+Nails are co-viewed, Kite+Yo-yo too; Kite is the most viewed overall."""
    tools, toys = make_category(slug="tools"), make_category(slug="toys")
    acme = make_brand("Acme")
    p = {
        "hammer": make_product("Hammer", category=tools, brand=acme),
        "nails": make_product("Nails", category=tools),
        "kite": make_product("Kite", category=toys, brand=acme),
        "yoyo": make_product("Yo-yo", category=toys),
    }
    catalog.sync_products()
    events = []
    for n in range(4):
        events += [("view", f"{n}a" * 16, p["hammer"]), ("view", f"{n}a" * 16, p["nails"])]
        events += [("view", f"{n}c" * 16, p["kite"]), ("view", f"{n}c" * 16, p["yoyo"])]
    events += [("view", f"{n}e" * 16, p["kite"]) for n in range(4)]
    tracking.store_events(tracking.build_event(t, visitor_id=v, product_id=x.pk) for t, v, x in events)
    return p


@pytest.fixture
def regular(shop):
    """A visitor who looked at the hammer before this session, with lists precomputed since."""
    visitor = uuid.uuid4().hex
    earlier = timezone.now() - timedelta(hours=3)  # before this session: the precomputed list speaks alone
    tracking.store_events(
        [tracking.build_event("view", visitor_id=visitor, product_id=shop["hammer"].pk, occurred_at=earlier)]
    )
    run_precompute()
    return visitor


# --- answers --------------------------------------------------------------------------------------------------------


def test_an_anonymous_visitor_gets_trending_with_reasons_and_product_details(shop):
    from recommendations.models import Placement

    for_you = Placement.objects.get(name="for_you")  # the default falls back to best sellers; this shop sets trending
    for_you.fallback = ["rules", "trending"]
    for_you.save()
    run_precompute()
    response = fetch(browser())
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["placement"] == "for_you"
    assert body["title"] == "Recommended for you"
    assert body["source"] == "fallback"
    assert re.fullmatch(r"[0-9a-f]{32}", body["recommendation_id"])
    first = body["items"][0]
    kite = shop["kite"]
    assert first == {
        "product_id": str(kite.pk),
        "name": "Kite",
        "url": kite.get_absolute_url(),
        "price": "10.00",
        "category": "toys",
        "brand": "Acme",
        "score": first["score"],
        "reason": "trending",
        "reason_text": "Trending now",
        "rank": 1,
    }
    assert isinstance(first["score"], float) and first["score"] > 0
    assert [item["rank"] for item in body["items"]] == list(range(1, len(body["items"]) + 1))
    assert all(set(item) == ITEM_FIELDS and item["reason_text"] for item in body["items"])
    assert not any(item["reason"].startswith("because:") for item in body["items"])


def test_a_visitor_with_history_gets_their_own_list_by_cookie(shop, regular):
    body = fetch(browser(regular)).json()
    assert body["source"] == "stored"
    assert ids(body)[0] == str(shop["nails"].pk)
    assert body["items"][0]["reason"] == f"because:{shop['hammer'].pk}"
    assert body["items"][0]["reason_text"] == "Because you looked at Hammer"
    # Another browser without that history does not get it.
    assert fetch(browser(uuid.uuid4().hex)).json()["source"] == "fallback"


def test_limit_caps_the_block(shop):
    run_precompute()
    body = fetch(browser(), "trending", limit=2).json()
    assert len(body["items"]) == 2
    assert ids(body)[0] == str(shop["kite"].pk)


def test_similar_never_lists_the_product_itself(shop):
    run_precompute()
    hammer = str(shop["hammer"].pk)
    body = fetch(browser(), "similar", product=hammer).json()
    assert ids(body)[0] == str(shop["nails"].pk)
    assert body["items"][0]["reason_text"] == "Often viewed together"
    assert hammer not in ids(body)
    assert len(body["items"]) == 3, "topped up from trending while the catalog has products"


def test_an_unknown_category_is_no_error(shop):
    run_precompute()
    response = fetch(browser(), "trending", category="no-such-category")
    assert response.status_code == 200
    assert response.json()["placement"] == "trending"


# --- whose list -----------------------------------------------------------------------------------------------------


def test_the_write_key_may_ask_for_another_shopper(shop, regular, write_key):
    response = fetch(Client(), headers=write_key, shopper=f"v:{regular}")
    assert response.status_code == 200, response.content
    assert ids(response.json())[0] == str(shop["nails"].pk)
    impression = Event.objects.get(event_type="impression")
    assert impression.shopper == f"v:{regular}", "the shopper the server renders for saw the block"
    assert impression.recommendation_id == response.json()["recommendation_id"]


def test_a_staff_user_may_preview_another_shopper_without_recording_an_impression(shop, regular):
    client = Client()
    client.force_login(make_user(is_staff=True))
    response = fetch(client, shopper=f"v:{regular}")
    assert response.status_code == 200, response.content
    assert ids(response.json())[0] == str(shop["nails"].pk)
    assert not Event.objects.filter(event_type="impression").exists()


def test_anyone_else_asking_for_another_shopper_is_refused(shop, regular):
    logged_in = Client()
    logged_in.force_login(make_user())
    for client in (browser(), browser(uuid.uuid4().hex), logged_in):
        response = fetch(client, shopper=f"v:{regular}")
        assert response.status_code == 403
        assert error_fields(response) == ["shopper"]
        assert "write key" in response.json()["detail"]
    assert not Event.objects.filter(event_type="impression").exists()


def test_a_shopper_may_name_themselves(shop, regular):
    response = fetch(browser(regular), shopper=f"v:{regular}")
    assert response.status_code == 200
    assert ids(response.json())[0] == str(shop["nails"].pk)


def test_a_wrong_write_key_is_refused(shop, write_key):
    response = fetch(Client(), headers={"X-Recommendations-Key": "wrong"})
    assert response.status_code == 403
    assert response.json()["detail"] == "Invalid write key."


# --- refusals -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "51"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"product": "p" * 65}, "product"),
        ({"product": "bad\x00id"}, "product"),
        ({"product": " 1"}, "product"),
        ({"category": "c" * 256}, "category"),
        ({"category": "toys\n"}, "category"),
        ({"shopper": "42"}, "shopper"),
        ({"shopper": "v:not-a-visitor-id"}, "shopper"),
        ({"shopper": "u:"}, "shopper"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(shop, params, field):
    response = fetch(browser(), "similar", **params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert error_fields(response) == [field]
    assert body["detail"].startswith(field)
    assert body["errors"][0]["message"]


def test_every_bad_parameter_is_named_at_once(shop):
    response = browser().get(f"{url('similar')}?limit=0&limit=3&category={'c' * 300}&shopper=x")
    assert response.status_code == 400
    assert sorted(error_fields(response)) == ["category", "limit", "shopper"]


def test_an_unknown_placement_is_a_404(shop):
    response = fetch(browser(), "for_yuo")
    assert response.status_code == 404
    assert error_fields(response) == ["placement"]
    assert "for_you" in response.json()["detail"], "the answer lists the placements there are"


def test_an_unknown_product_is_a_404(shop):
    response = fetch(browser(), "similar", product="no-such-product")
    assert response.status_code == 404
    assert error_fields(response) == ["product"]


# --- impressions and throttling -------------------------------------------------------------------------------------


def test_the_impression_is_stored_with_the_answers_recommendation_id(shop, regular):
    body = fetch(browser(regular), "similar", product=str(shop["hammer"].pk)).json()
    impression = Event.objects.get(event_type="impression")
    assert impression.recommendation_id == body["recommendation_id"]
    assert impression.placement == "similar"
    assert impression.shopper == f"v:{regular}"
    assert impression.context["items"] == ids(body)


def test_a_click_sent_back_through_ingest_attributes_the_purchase_to_the_block(shop, regular):
    client = browser(regular)
    body = fetch(client).json()
    product = body["items"][0]["product_id"]
    click = {
        "event_type": "click",
        "product_id": product,
        "placement": body["placement"],
        "recommendation_id": body["recommendation_id"],
    }
    purchase = {"event_type": "purchase", "product_id": product}
    for event in (click, purchase):
        response = client.post(
            reverse("recommendations:ingest"), json.dumps({"events": [event]}), content_type="application/json"
        )
        assert response.json()["accepted"] == 1, response.content
    stored = Event.objects.get(event_type="purchase")
    assert stored.recommendation_id == body["recommendation_id"]
    assert Event.objects.filter(event_type="impression", recommendation_id=body["recommendation_id"]).count() == 1


def read_rates(browser_rate: str, key_rate: str = "1000/min") -> dict[str, Any]:
    return {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "recommendations_read": browser_rate,
            "recommendations_read_key": key_rate,
        },
    }


def test_a_browser_is_throttled_with_retry_after(shop, write_key):
    run_precompute()
    client = browser(uuid.uuid4().hex)
    with override_settings(REST_FRAMEWORK=read_rates("2/min", key_rate="1/min")):
        assert [fetch(client).status_code for _ in range(2)] == [200, 200]
        response = fetch(client)
        assert response.status_code == 429
        assert int(response["Retry-After"]) >= 1
        assert error_fields(response) == [None] and "throttled" in response.json()["detail"]
        # Another shopper, and a server with the key, have buckets of their own.
        assert fetch(browser(uuid.uuid4().hex)).status_code == 200
        assert fetch(Client(), headers=write_key).status_code == 200
        assert fetch(Client(), headers=write_key).status_code == 429
    assert Event.objects.filter(event_type="impression").count() == 4


# --- the OpenAPI schema and its docs --------------------------------------------------------------------------------


def openapi_schema() -> dict[str, Any]:
    response = Client().get(reverse("api_schema"), headers={"Accept": "application/vnd.oai.openapi+json"})
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def as_json_schema(openapi: dict[str, Any], component: str) -> dict[str, Any]:
    """A component of the OpenAPI 3.0 document as JSON Schema: `nullable` becomes a null type."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: convert(v) for k, v in node.items()}
            if node.pop("nullable", False) and "type" in node:
                node["type"] = [node["type"], "null"]
            return node
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    components = convert(copy.deepcopy(openapi["components"]))
    return {"$ref": f"#/components/schemas/{component}", "components": components}


def test_the_schema_lists_both_endpoints_and_describes_real_answers(shop, regular):
    schema = openapi_schema()
    assert {"/api/events/", "/api/recommendations/{placement}/"} <= set(schema["paths"])
    operation = schema["paths"]["/api/recommendations/{placement}/"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"placement", "product", "category", "limit", "shopper"}
    assert set(params["placement"]["schema"]["enum"]) == set(serving.placement_names())
    assert {"200", "400", "403", "404", "429"} <= set(operation["responses"])
    assert set(schema["components"]["securitySchemes"]) == {"writeKey", "cookieAuth"}

    ok = fetch(browser(regular)).json()
    assert ok["items"]
    jsonschema.validate(ok, as_json_schema(schema, "RecommendationBlock"))
    assert set(schema["components"]["schemas"]["RecommendedProduct"]["properties"]) == ITEM_FIELDS
    refused = fetch(browser(), limit="0").json()
    jsonschema.validate(refused, as_json_schema(schema, "ApiError"))
    ingest = Client().post(reverse("recommendations:ingest"), "{}", content_type="application/json").json()
    jsonschema.validate(ingest, as_json_schema(schema, "BatchResult"))


def test_spectacular_validates_the_schema_without_warnings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["DJANGO_SETTINGS_MODULE"] = "shop.settings"
    out = tmp_path / "schema.yaml"
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stderr
    paths = yaml.safe_load(out.read_text())["paths"]
    assert {"/api/events/", "/api/recommendations/{placement}/"} <= set(paths)


def test_the_docs_page_loads_swagger_ui_from_local_static_files_only(tmp_path):
    response = Client().get(reverse("api_docs"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "SwaggerUIBundle" in html
    assert reverse("api_schema") in html
    assert "://" not in html, "nothing is loaded from another host (no CDN)"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 3  # the CSS, the two scripts (and the favicon)
    static_url = "/" + settings.STATIC_URL.lstrip("/")
    assert all(a.startswith(static_url + "drf_spectacular_sidecar/") for a in assets), assets
    # collectstatic gathers every file the page asks for, so a deployment serves them.
    with override_settings(STATIC_ROOT=tmp_path / "static"):
        call_command("collectstatic", interactive=False, verbosity=0)
    for asset in assets:
        assert (tmp_path / "static" / asset.removeprefix(static_url)).is_file(), asset
