"""The reads a built block makes, as plain SQL on PostgreSQL.

Serving builds a block from three or four indexed reads (the shopper's newest events, a stored list, product
profiles). PostgreSQL answers each in well under 0.1 ms; the ORM spends ~0.3 ms more per query building and compiling
it, so on a block built afresh the ORM cost more than the database. On PostgreSQL serving therefore sends the same
SQL on a cursor. Each function here returns exactly what its ORM twin in `serving` returns (the same rows in the same
order, with the same Python types: the cursor is Django's, so datetimes are aware and prices are Decimals);
`tests/test_serving_sql.py` compares the two. Other databases (SQLite in the demo) keep the ORM.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connections, router
from django.db.models import Model

from recommendations.models import Event, ProductProfile, StoredList

ENABLED = True  # False: every read goes through the ORM, whatever the database (tests compare the two paths)


def usable(model: type[Model]) -> Any:
    """The connection `model` is read from when it is PostgreSQL and the fast path is on, else None."""
    if not ENABLED:
        return None
    connection = connections[router.db_for_read(model)]
    return connection if connection.vendor == "postgresql" else None


# A shopper's newest events that name a product, impressions and searches left out (shopper, limit).
_NEWEST_EVENTS = (
    "WHERE shopper = %s AND NOT (product_id = '') AND NOT (event_type IN ('impression', 'search')) "
    "ORDER BY occurred_at DESC, id DESC LIMIT %s"
)


def _table(connection: Any, model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def newest_events(connection: Any, shopper: str, limit: int) -> list[tuple[str, str, datetime]]:
    """(product, type, when) of the shopper's newest events that name a product, impressions and searches left out."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT product_id, event_type, occurred_at FROM {_table(connection, Event)} {_NEWEST_EVENTS}",  # noqa: S608
            [shopper, limit],
        )
        return cursor.fetchall()


def events_and_lists(
    connection: Any, shopper: str, limit: int, set_id: int, placements: list[str], subjects: list[str]
) -> tuple[list[tuple[str, str, datetime]], list[tuple[str, str, list[list[Any]]]]]:
    """`newest_events` and `stored_lists` in one statement: what a built block reads first costs one round trip."""
    events, lists = _table(connection, Event), _table(connection, StoredList)
    with connection.cursor() as cursor:
        cursor.execute(
            f"(SELECT product_id, event_type, occurred_at, id, NULL FROM {events} {_NEWEST_EVENTS}) "  # noqa: S608
            f"UNION ALL (SELECT placement, subject, NULL, NULL, items::text FROM {lists} "
            "WHERE placement = ANY(%s) AND recommendation_set_id = %s AND subject = ANY(%s))",
            [shopper, limit, placements, set_id, subjects],
        )
        rows = cursor.fetchall()
    newest = sorted(
        ((at, pk, a, b) for a, b, at, pk, _ in rows if pk is not None), reverse=True
    )  # UNION keeps no order
    return (
        [(product_id, event_type, at) for at, _, product_id, event_type in newest],
        [(placement, subject, _json(items)) for placement, subject, _, pk, items in rows if pk is None],
    )


def newest_events_many(connection: Any, shoppers: list[str], limit: int) -> dict[str, list[tuple[str, str, datetime]]]:
    """`newest_events` of many shoppers in one statement (a sender composing a batch of e-mails): each shopper's rows
    newest first, as `newest_events` gives them; a shopper with none is absent."""
    events = _table(connection, Event)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.shopper, e.product_id, e.event_type, e.occurred_at FROM unnest(%s::text[]) "  # noqa: S608
            "WITH ORDINALITY AS s(shopper, n) CROSS JOIN LATERAL "
            f"(SELECT product_id, event_type, occurred_at, id FROM {events} "
            f"{_NEWEST_EVENTS.replace('shopper = %s', 'shopper = s.shopper')}) e "
            "ORDER BY s.n, e.occurred_at DESC, e.id DESC",
            [shoppers, limit],
        )
        rows = cursor.fetchall()
    found: dict[str, list[tuple[str, str, datetime]]] = {}
    for shopper, product_id, event_type, occurred_at in rows:
        found.setdefault(shopper, []).append((product_id, event_type, occurred_at))
    return found


def purchases(connection: Any, shopper: str, limit: int) -> list[tuple[str, datetime]]:
    """(product, when) of the shopper's newest purchases."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT product_id, occurred_at FROM {_table(connection, Event)} "  # noqa: S608
            "WHERE event_type = 'purchase' AND shopper = %s AND NOT (product_id = '') "
            "ORDER BY occurred_at DESC LIMIT %s",
            [shopper, limit],
        )
        return cursor.fetchall()


def stored_lists(
    connection: Any, set_id: int, placements: list[str], subjects: list[str]
) -> list[tuple[str, str, list[list[Any]]]]:
    """(placement, subject, items) of every stored list of the set in any of the placements for any of the subjects."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT placement, subject, items FROM {_table(connection, StoredList)} "  # noqa: S608
            "WHERE placement = ANY(%s) AND recommendation_set_id = %s AND subject = ANY(%s)",
            [placements, set_id, subjects],
        )
        return [(placement, subject, _json(items)) for placement, subject, items in cursor.fetchall()]


def profiles(connection: Any, product_ids: list[str]) -> list[tuple[str, str, str, bool, bool, str, Any]]:
    """(product, category, brand, active, in stock, name, price) of those of the products that have a profile."""
    with connection.cursor() as cursor:
        table = _table(connection, ProductProfile)
        cursor.execute(
            f"SELECT product_id, category, brand, active, in_stock, name, price FROM {table} "  # noqa: S608
            "WHERE product_id = ANY(%s)",
            [product_ids],
        )
        return cursor.fetchall()


def _json(value: Any) -> Any:
    """A jsonb column as JSONField reads it (Django has the driver hand jsonb over as text)."""
    return json.loads(value) if isinstance(value, str) else value
