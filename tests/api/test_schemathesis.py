"""Schemathesis against a live server: every operation of /api/schema/, every check, anonymously and with the key.

The server is gunicorn serving the demo shop on the test database (PostgreSQL) and cache (Redis), with a small catalog
and precomputed lists, so product ids exist and blocks have items. Every check Schemathesis has runs on every answer:
no 5xx; status codes, content types, headers and bodies as the schema says; schema-valid requests accepted and
schema-invalid ones refused (with 413 counted as a refusal: it is how the API refuses an oversized batch); methods the
schema does not list refused with 405. Each request generated is sent twice, without and with the write key.

Schemathesis reads the schema drf-spectacular generates, loaded when this module is collected (its pytest plugin's
lazy loader cannot run under pytest 9); `test_the_schema_tested_is_the_one_served` checks it is what /api/schema/
serves. The run is derandomised, so CI sees the same cases every time; `SCHEMATHESIS_EXAMPLES=500` explores further.

Three rules of POST /api/events/ depend on things no OpenAPI schema can state, so each event is sent the way a real
client would send it (`as_a_client_would`), in valid and invalid requests alike, without touching what Schemathesis
made invalid:
- a timestamp must fall in the last EVENT_MAX_AGE_DAYS: one outside is replaced by the present, in the same form;
- `context` holds at most 2048 bytes of JSON, without NUL or a lone surrogate in any key or string: one that breaks
  either is replaced by {};
- a browser names no shopper (its cookie says who it is), a server with the write key names one in every event.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import requests
import schemathesis
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from recommendations import catalog, tracking
from recommendations.api.validation import MAX_CONTEXT_BYTES, UNSTORABLE, oldest_event_time, parse_timestamp
from recommendations.lists.precompute import run_precompute
from tests.factories import child_database_url, closed_port, make_brand, make_category, make_product

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0  # seconds for gunicorn to import Django and answer; it takes a few
WRITE_KEY = "schemathesis-write-key"
KEY_HEADER = {"X-Recommendations-Key": WRITE_KEY}
SERVER_VISITOR = "5c4e0a1d" * 4  # the shopper a keyed event names when the generated one named nobody
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
RUN = hypothesis_settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,  # nothing written into the checkout
    deadline=None,  # a live server's first answers include connection set-up
    suppress_health_check=list(HealthCheck),
)


def generated_schema() -> dict[str, Any]:
    """The document /api/schema/ serves, as JSON (drf-spectacular's generator, as SpectacularAPIView calls it)."""
    from drf_spectacular.generators import SchemaGenerator

    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))


# Every check, as configured out of the box, but for one status: 413 is how this API refuses a batch over
# INGEST_MAX_EVENTS (the schema's maxItems), and it is a refusal like the 400s Schemathesis expects.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
            }
        }
    }
)
SCHEMA_DOCUMENT = generated_schema()
schema = schemathesis.openapi.from_dict(SCHEMA_DOCUMENT, config=CONFIG)


class ShopServer:
    """gunicorn serving the demo shop (tests.settings) on a free port, on the test database, until `stop`."""

    def __init__(self, log: Path) -> None:
        self.port = closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "RECOMMENDATIONS_"))}
        env.pop("CELERY_BROKER_URL", None)  # tasks run in the server, so none is left queued for another test's worker
        env.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            DJANGO_LOG_LEVEL="ERROR",
            DATABASE_URL=child_database_url(),
            RECOMMENDATIONS_WRITE_KEY=WRITE_KEY,
            RECOMMENDATIONS_MODEL_DIR=str(log.parent),
            # Hundreds of requests a minute from one client: no throttling here (tests/api/test_throttling.py).
            **{
                f"RECOMMENDATIONS_{scope}_RATE": "1000000/min" for scope in ("INGEST", "INGEST_KEY", "READ", "READ_KEY")
            },
        )
        command = [sys.executable, "-m", "gunicorn", "shop.wsgi:application", "--bind", f"127.0.0.1:{self.port}"]
        command += ["--workers", "1", "--timeout", "60", "--log-level", "warning"]  # the requests come one at a time
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/api/schema/", timeout=START_TIMEOUT).status_code == 200:
                    return
            except requests.ConnectionError:  # not listening yet
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"gunicorn did not answer within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown: nothing is in flight any more
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


def seed_shop() -> None:
    """Six products in two categories, viewed by four shoppers, with lists precomputed: ids exist, blocks have items."""
    tools, toys = make_category(slug="tools"), make_category(slug="toys")
    acme = make_brand("Acme")
    products = [make_product(f"Tool {n}", category=tools, brand=acme) for n in range(3)]
    products += [make_product(f"Toy {n}", category=toys) for n in range(3)]
    catalog.sync_products()
    tracking.store_events(
        tracking.build_event("view", visitor_id=f"{shopper:032x}", product_id=product.pk)
        for shopper in range(4)
        for product in products[shopper % 2 :: 2]
    )
    run_precompute()


@pytest.fixture(scope="module")
def shop_server(django_db_setup: Any, tmp_path_factory: Any) -> Iterator[ShopServer]:
    """One gunicorn for the module, on the test database."""
    server = ShopServer(tmp_path_factory.mktemp("schemathesis") / "gunicorn.log")
    yield server
    server.stop()


@pytest.fixture
def shop(transactional_db: Any, shop_server: ShopServer) -> Iterator[str]:
    """The server's URL, with the shop's rows committed (the server reads them through its own connections).

    A test that fails prints the end of the server's log, where a 500's traceback is."""
    seed_shop()
    yield shop_server.url
    print(f"--- the end of {shop_server.log}:\n{shop_server.log.read_text(errors='replace')[-5000:]}")


def as_json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` admits null."""
    if isinstance(node, list):
        return [as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: as_json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


# The event fields the three rules touch, validated as Schemathesis validates them (formats included).
EVENT_FIELDS = SCHEMA_DOCUMENT["components"]["schemas"]["ProductEvent"]["properties"]
FIELD_IS_VALID = {
    name: jsonschema_rs.Draft4Validator(as_json_schema(EVENT_FIELDS[name]), validate_formats=True).is_valid
    for name in ("timestamp", "context", "user_id", "visitor_id")
}


def _schema_valid(event: dict[str, Any], name: str) -> bool:
    return name in event and FIELD_IS_VALID[name](event[name])


def _now_like(raw: Any) -> Any:
    """The present in the form a timestamp had: Unix seconds as a number or as digits, or ISO-8601 text."""
    if not isinstance(raw, str):
        return time.time()
    return str(int(time.time())) if raw.strip().replace(".", "", 1).isdigit() else timezone.now().isoformat()


def _in_window(raw: Any) -> bool:
    try:
        moment = parse_timestamp(raw)
    except ValueError:
        return False
    return moment >= oldest_event_time(datetime.now(UTC)) + timedelta(minutes=1)


def _storable(value: Any) -> bool:
    """No NUL and no lone surrogate in any key or string, however deep (json.dumps escapes a NUL, so the packed
    text cannot tell)."""
    if isinstance(value, str):
        return UNSTORABLE.search(value) is None
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


def _fits(context: Any) -> bool:
    if not isinstance(context, dict):
        return True
    packed = json.dumps(context, separators=(",", ":"), ensure_ascii=False)
    return len(packed.encode("utf-8", "surrogatepass")) <= MAX_CONTEXT_BYTES and _storable(context)


def as_a_client_would(case: Any, *, keyed: bool) -> None:
    """Make each event of a batch follow the three rules the schema cannot state (see the module docstring).

    Only a value the schema accepts is ever replaced, and only by another value it accepts, so an invalid request
    stays invalid in the part Schemathesis made invalid, and is not refused for a rule it never broke.
    """
    if case.operation.path != "/api/events/" or not isinstance(case.body, dict):
        return
    events = case.body.get("events")
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict):
            continue
        if _schema_valid(event, "timestamp") and event["timestamp"] is not None and not _in_window(event["timestamp"]):
            event["timestamp"] = _now_like(event["timestamp"])
        if _schema_valid(event, "context") and not _fits(event["context"]):
            event["context"] = {}
        if not keyed:
            for name in ("user_id", "visitor_id"):
                if _schema_valid(event, name):
                    del event[name]
        elif event.get("user_id") in (None, "") and event.get("visitor_id") in (None, ""):
            event["visitor_id"] = SERVER_VISITOR


@schema.parametrize()
@RUN
def test_every_operation_anonymously_and_with_the_write_key(case: Any, shop: str) -> None:
    generated = copy.deepcopy(case.body)
    as_a_client_would(case, keyed=False)
    case.call_and_validate(base_url=shop)
    case.body = generated
    as_a_client_would(case, keyed=True)
    case.call_and_validate(base_url=shop, headers=KEY_HEADER)


def test_the_schema_tested_is_the_one_served(shop: str) -> None:
    served = requests.get(f"{shop}/api/schema/", params={"format": "json"}, timeout=30)
    assert served.status_code == 200, served.text
    assert served.json() == SCHEMA_DOCUMENT
    paths = {"/api/events/", "/api/recommendations/{placement}/", "/api/privacy/erase/", "/api/privacy/export/"}
    assert paths <= set(SCHEMA_DOCUMENT["paths"])
