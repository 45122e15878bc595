"""PostgreSQL lost during ingest: a 503 with Retry-After and nothing half-written, so the sender's retry of the same
batch is exact (its event ids dedupe). The outages are real: a connection to a closed port (`database_unreachable`),
and the request's own connection terminated by PostgreSQL between two INSERT statements of one batch
(`pg_terminate_backend`); the shared server is never stopped.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.test import Client
from django.urls import reverse

from recommendations.models import Event, ProductProfile
from recommendations.tracking import events as tracking_events
from tests.factories import database_unreachable, make_co_viewed_toys

pytestmark = pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"
)

WRITE_KEY = "s3cret-write-key-for-fault-tests"


@pytest.fixture(autouse=True)
def write_key(settings: Any) -> None:
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "WRITE_KEY": WRITE_KEY}


def batch(n: int) -> list[dict[str, Any]]:
    return [{"event_type": "view", "product_id": "p1", "user_id": str(i), "event_id": f"b{i}"} for i in range(n)]


def post(events: list[dict[str, Any]]) -> Any:
    return Client().post(
        reverse("recommendations:ingest"),
        data=json.dumps({"events": events}),
        content_type="application/json",
        headers={"X-Recommendations-Key": WRITE_KEY},
    )


@pytest.mark.django_db
def test_a_write_key_batch_while_the_database_is_unreachable_is_a_503_and_its_retry_is_exact():
    ProductProfile.objects.create(product_id="p1", name="p1")
    with database_unreachable():
        response = post(batch(3))
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0
    assert response.json()["errors"][0]["index"] is None
    assert not Event.objects.exists()

    retried = post(batch(3))
    assert retried.status_code == 200 and retried.json()["accepted"] == 3
    again = post(batch(3))  # a sender that never saw the answer sends once more
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 3
    assert Event.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_connection_lost_between_two_inserts_of_a_batch_writes_nothing(monkeypatch):
    ProductProfile.objects.create(product_id="p1", name="p1")
    monkeypatch.setattr(tracking_events, "INSERT_BATCH", 2)  # five events: three INSERT statements
    inserts: list[str] = []

    def drop_before_the_second_insert(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("INSERT INTO") and "recommendations_event" in sql:
            inserts.append(sql)
            if len(inserts) == 2:
                # PostgreSQL ends this session (an error here, which is the point): the INSERT below meets it gone.
                with contextlib.suppress(Exception):
                    context["cursor"].cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(drop_before_the_second_insert):
        response = post(batch(5))
    assert len(inserts) == 2, "the first INSERT ran, the second met a terminated session"
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0

    connection.close()  # the terminated session; the next query opens a new one
    assert not Event.objects.exists(), "the first INSERT's two events were rolled back with the rest"
    retried = post(batch(5))
    assert retried.status_code == 200 and retried.json()["accepted"] == 5
    assert Event.objects.count() == 5


def terminate_from_another_session(pid: int) -> None:
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_a_kept_connection_postgresql_dropped_between_requests_costs_no_5xx():
    """pg_terminate_backend (a failover, a restart, an idle-session timeout) between two requests: the web process'
    kept connection (CONN_MAX_AGE) is dead; the next request must get a fresh one, not a 500 or a 503."""
    make_co_viewed_toys()
    client = Client()
    api = reverse("recommendations:recommendations", args=["trending"])
    assert client.get(api).status_code == 200
    assert settings.DATABASES["default"]["CONN_MAX_AGE"], "the connection is kept between requests"
    pid = connection.connection.get_backend_pid()
    terminate_from_another_session(pid)

    # What Django's request handler does first (request_started), and the test client leaves out.
    close_old_connections()
    response = client.get(api)
    assert response.status_code == 200, response.content
    assert response.json()["items"]
    assert connection.connection.get_backend_pid() != pid
    terminate_from_another_session(connection.connection.get_backend_pid())
    close_old_connections()
    assert client.get(reverse("home")).status_code == 200
