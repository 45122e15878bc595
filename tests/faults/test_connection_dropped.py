"""PostgreSQL ends a web process' session in the middle of a request (`pg_terminate_backend`, a restart, a failover):
the request's later reads go on over a new connection, so the page answers 200 with its blocks and the API answers
200 with the same items (bench/load.py saw 500s and empty blocks here). A write that could be done twice is never sent
again, and inside a transaction the error stands (ingest's 503 and exact retry: test_database_down.py).

Real PostgreSQL; the session is terminated for real, by itself, just before the chosen statement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection, connections
from django.test import Client
from django.urls import reverse

from recommendations import holds
from recommendations.conf import rec_settings
from recommendations.models import Event, ProductProfile
from recommendations.postgresql.base import may_send_again
from tests.factories import block_html, make_co_viewed_toys, rendered_ids

pytestmark = [
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "recommendations.postgresql", reason="the demo's PostgreSQL backend"
    ),
    pytest.mark.django_db(transaction=True),  # autocommit, as a web request runs
]

SHOPPER_VISITOR = f"{0:032x}"  # one of the toy shop's five visitors: they have a for_you list


def terminate_from_another_session(pid: int) -> None:
    """What an operator's `pg_terminate_backend`, a restart or a failover does to a web process' session; returns once
    the session is gone."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            for _ in range(200):
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
                if cursor.fetchone() is None:
                    return
                time.sleep(0.01)
    finally:
        other.close()
    raise AssertionError(f"session {pid} was not terminated")


@contextlib.contextmanager
def session_ended_before(nth: int, starts: str = "SELECT") -> Iterator[list[int]]:
    """The connection's session is terminated (from another session) just before the `nth` statement starting with
    `starts`, and before no other; yields the pid ended, so a test can tell a new connection served the rest."""
    seen: list[str] = []
    pids: list[int] = []

    def terminate(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith(starts):
            seen.append(sql)
            if len(seen) == nth:
                pids.append(connection.connection.info.backend_pid)
                terminate_from_another_session(pids[-1])
        return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(terminate):
            yield pids
    finally:
        if connection.connection is not None and connection.connection.closed:
            connection.close()  # a test that expects the error leaves a dead session behind: not for the next one
    assert len(seen) >= nth, f"only {len(seen)} statements ran: the session was never terminated"


def home(client: Client) -> dict[str, list[str]]:
    response = client.get(reverse("home"))
    assert response.status_code == 200, response.content[:500]
    html = response.content.decode()
    return {p: rendered_ids(block_html(html, p)) for p in ("for_you", "trending")}


def cold() -> None:
    """Nothing held by the process or cached: the next page reads everything from the database."""
    holds.clear_all()
    cache.clear()


def shopper() -> Client:
    client = Client()
    client.cookies[rec_settings.VISITOR_COOKIE_NAME] = SHOPPER_VISITOR
    return client


@pytest.mark.parametrize("nth", [1, 3, 6, 9, 12])
def test_a_session_ended_between_two_reads_of_a_page_costs_neither_a_500_nor_a_block(nth):
    make_co_viewed_toys()
    before = home(shopper())
    assert len(before["for_you"]) == 4, before
    cold()  # every read again: the shop's own, the rules', the lists', the profiles'
    with session_ended_before(nth) as ended:
        during = home(shopper())  # was a 500 (the shop's own read) or an empty block (a block's read)
    assert during == before
    assert ended and connection.connection.info.backend_pid != ended[0], "a new session served the rest"


def test_the_api_answers_from_a_new_session():
    make_co_viewed_toys()
    client = shopper()
    api = reverse("recommendations:recommendations", args=["for_you"])
    before = client.get(api)
    assert before.status_code == 200
    cold()
    with session_ended_before(3):
        during = client.get(api)
    assert during.status_code == 200, during.content  # was a 500
    assert [i["product_id"] for i in during.json()["items"]] == [i["product_id"] for i in before.json()["items"]]


def test_a_product_view_recorded_while_the_session_is_ended_is_stored_once():
    """record_event inserts in a transaction of its own: it tries once more on a new connection (the event id makes a
    second insert of a committed event a duplicate, never a second row)."""
    products = make_co_viewed_toys()
    client = shopper()
    client.cookies[rec_settings.CONSENT_COOKIE_NAME] = "granted"
    views_before = Event.objects.filter(event_type="view", visitor_id=SHOPPER_VISITOR).count()
    with session_ended_before(1, starts="INSERT"):
        response = client.get(products["Drum"].get_absolute_url())
    assert response.status_code == 200
    drum = str(products["Drum"].pk)
    drum_views = Event.objects.filter(event_type="view", visitor_id=SHOPPER_VISITOR, product_id=drum)
    assert drum_views.count() == 1, "the view was lost with the session (or stored twice)"
    assert Event.objects.filter(event_type="view", visitor_id=SHOPPER_VISITOR).count() == views_before + 1


def test_a_write_that_could_be_done_twice_is_not_sent_again():
    ProductProfile.objects.create(product_id="p1", name="Kite")
    with session_ended_before(1, starts="UPDATE"), pytest.raises((OperationalError, InterfaceError)):
        ProductProfile.objects.filter(product_id="p1").update(name="Kite 2")
    assert ProductProfile.objects.get(product_id="p1").name == "Kite"


def test_nothing_is_sent_again_inside_a_transaction():
    """Earlier statements of the transaction went with the session: only the caller can start it again."""
    from django.db import transaction

    ProductProfile.objects.create(product_id="p1", name="Kite")
    with pytest.raises((OperationalError, InterfaceError)), transaction.atomic(), session_ended_before(1):
        ProductProfile.objects.get(product_id="p1")
    connection.close()
    assert ProductProfile.objects.get(product_id="p1").name == "Kite"


def test_what_may_be_sent_again():
    class Dead:
        closed = 2

    db = type("Db", (), {"connection": Dead(), "autocommit": True, "in_atomic_block": False})()
    cursor = type("Cursor", (), {"name": None})()
    assert may_send_again(db, cursor, 'SELECT "id" FROM "t"')
    assert may_send_again(db, cursor, "(SELECT 1) UNION (SELECT 2)")
    assert may_send_again(db, cursor, 'INSERT INTO "e" ("a") VALUES (1) ON CONFLICT ("a") DO NOTHING RETURNING "id"')
    assert not may_send_again(db, cursor, 'INSERT INTO "e" ("a") VALUES (1)')
    assert not may_send_again(db, cursor, 'UPDATE "t" SET "a" = 1')
    assert not may_send_again(db, cursor, 'DELETE FROM "t"')
    assert not may_send_again(db, type("Cursor", (), {"name": "_django_curs_1"})(), "SELECT 1")
    db.in_atomic_block = True
    assert not may_send_again(db, cursor, "SELECT 1")
    db.in_atomic_block, db.connection = False, type("Alive", (), {"closed": 0})()
    assert not may_send_again(db, cursor, "SELECT 1"), "an error on a live connection is the statement's own"
