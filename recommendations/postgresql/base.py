"""Django's PostgreSQL backend, with one change: a statement that is safe to send again, outside a transaction, whose
connection the server dropped meanwhile (`pg_terminate_backend`, a restart, a failover, an idle-session timeout) is
sent once more on a fresh connection instead of failing the request.

`CONN_HEALTH_CHECKS` replaces a dead kept connection before a request's first query only; a connection terminated
between two queries of the same request (a page reads the catalog, then builds its blocks) would fail the rest of the
request, so a page answered 500 and its blocks rendered empty during a blip. Only statements that cannot be done twice
are sent again: reads (`SELECT`) and `INSERT ... ON CONFLICT DO NOTHING` (the events' idempotent
insert), and only in autocommit outside `atomic()`, where the failed statement committed nothing or everything on its
own. Inside a transaction the error stands: the work before it is gone with the session, so the caller must see it
(event ingest answers 503 and the sender retries the whole batch). Select it with
`DATABASES["default"]["ENGINE"] = "recommendations.postgresql"` (the demo's settings do).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.db import InterfaceError, OperationalError
from django.db.backends.postgresql import base
from django.db.backends.utils import CursorWrapper

logger = logging.getLogger(__name__)

# A read, or the events' insert that a second send cannot double; anything else may have had an effect.
_SAFE_AGAIN = re.compile(r"^\s*(\(\s*)?SELECT\b|^\s*INSERT\b.*\bON CONFLICT\b.*\bDO NOTHING\b", re.I | re.S)


def may_send_again(db: Any, cursor: Any, sql: str) -> bool:
    """True when `sql` failed because the server closed the connection and sending it again cannot do it twice."""
    connection = db.connection
    return (
        connection is not None
        and bool(getattr(connection, "closed", False))  # psycopg2: 1 or 2 once closed; psycopg 3: True
        and db.autocommit
        and not db.in_atomic_block
        and getattr(cursor, "name", None) is None  # a server-side cursor belongs to the dead session
        and isinstance(sql, str)
        and _SAFE_AGAIN.match(sql) is not None
    )


class ReconnectingCursorMixin:
    """Sends a statement once more on a new connection when `may_send_again` says so."""

    cursor: Any
    db: Any

    def _execute(self, sql: str, params: Any, *ignored_wrapper_args: Any) -> Any:
        try:
            return super()._execute(sql, params, *ignored_wrapper_args)  # type: ignore[misc]
        except (OperationalError, InterfaceError) as exc:
            if not may_send_again(self.db, self.cursor, sql):
                raise
            logger.warning("the database dropped the connection (%s); sending the statement again on a new one", exc)
            self.db.close()
            self.db.ensure_connection()
            self.cursor = self.db.create_cursor()
            return super()._execute(sql, params, *ignored_wrapper_args)  # type: ignore[misc]


class ReconnectingCursorWrapper(ReconnectingCursorMixin, CursorWrapper):
    pass


class ReconnectingCursorDebugWrapper(ReconnectingCursorMixin, base.CursorDebugWrapper):
    pass


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's PostgreSQL backend whose cursors reconnect (see the module's docstring)."""

    def make_cursor(self, cursor: Any) -> CursorWrapper:
        return ReconnectingCursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor: Any) -> CursorWrapper:
        return ReconnectingCursorDebugWrapper(cursor, self)
