"""The event import (`import_events`) and the fast bulk event writer the demo data uses too.

Field rules follow the ingest API's (`recommendations.api.validation`) so an event the API refuses is refused here
too, with two differences that suit history: the timestamp is required, and a timestamp in the future is an error
rather than replaced by "now". Like the API, an event older than EVENT_MAX_AGE_DAYS is refused (a bad row, reported
with its line; --skip-invalid imports the others): clamping it would invent a time the file never said.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction

from recommendations.api.validation import (
    MAX_ID_LENGTH,
    NEEDS_PRODUCT,
    oldest_event_time,
)
from recommendations.conf import EVENT_TYPES
from recommendations.importing.files import (
    FileSpec,
    InvalidRows,
    ProgressFactory,
    Record,
    Row,
    Scan,
    Validator,
    no_progress,
    parse_decimal,
    parse_quantity,
    parse_text,
    parse_time,
    validated,
)
from recommendations.models import Event, shopper_key
from recommendations.tracking import EVENT_COLUMNS
from recommendations.tracking.consent import has_opt_outs, opted_out_users

USER_ID = EVENT_COLUMNS.index("user_id")

try:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3
except ImportError:  # no PostgreSQL driver installed: the portable path is used anyway
    is_psycopg3 = False

MAX_QUERY = 255
MAX_QUERY_INPUT = 10_000  # longer queries are refused; up to this they are cut to MAX_QUERY like the API does

_EVENT_TYPES = frozenset(EVENT_TYPES)

EventValues = tuple[Any, ...]  # one value per EVENT_COLUMNS entry

EVENT_SPEC = FileSpec(
    required=("event_type", "timestamp"),
    optional=("event_id", "user_id", "visitor_id", "product_id", "quantity", "value", "query"),
    any_of=("user_id", "visitor_id"),
)


def derived_event_id(
    event_type: str,
    user_id: str,
    visitor_id: str,
    product_id: str,
    moment: datetime,
    quantity: int,
    value: Any,
    query: str,
) -> str:
    """A stable id from the event's content, so importing the same history twice stores it once."""
    content = "\x1f".join(
        (event_type, user_id, visitor_id, product_id, moment.isoformat(), str(quantity), str(value or ""), query)
    )
    return "imp-" + hashlib.sha256(content.encode()).hexdigest()[:48]


def event_validator(now: datetime) -> Validator:
    """A validator of event rows giving EventValues ready for the writer (received_at = `now`)."""
    oldest = oldest_event_time(now)

    def validate(record: Record, line: int) -> tuple[EventValues | None, list[tuple[str, str]]]:
        row = Row(record)
        event_type = row.get("event_type", parse_text, 32, True)
        if event_type:
            event_type = event_type.lower()
            if event_type not in _EVENT_TYPES:
                row.problem("event_type", f"{event_type!r} is not one of: {', '.join(EVENT_TYPES)}")
        user_id = row.get("user_id", parse_text, MAX_ID_LENGTH)
        visitor_id = row.get("visitor_id", parse_text, MAX_ID_LENGTH)
        if not (user_id or visitor_id) and not (row.has_problem("user_id") or row.has_problem("visitor_id")):
            row.problem("user_id/visitor_id", "one of them is required")
        product_id = row.get("product_id", parse_text, MAX_ID_LENGTH)
        if event_type in NEEDS_PRODUCT and not product_id and not row.has_problem("product_id"):
            row.problem("product_id", f"is required for {event_type} events")
        moment = row.get("timestamp", parse_time, now, oldest)
        quantity = row.optional("quantity", parse_quantity, 1)
        value = row.optional("value", parse_decimal, None)
        query = (row.get("query", parse_text, MAX_QUERY_INPUT) or "")[:MAX_QUERY]
        if event_type == "search" and not query and not row.has_problem("query"):
            row.problem("query", "is required for search events")
        event_id = row.get("event_id", parse_text, MAX_ID_LENGTH)
        if row.problems:
            return None, row.problems
        if not event_id:
            event_id = derived_event_id(event_type, user_id, visitor_id, product_id, moment, quantity, value, query)
        shopper = shopper_key(user_id, visitor_id)
        # History keeps its own time: occurred_at = client_time = the file's timestamp.
        values = (event_id, event_type, user_id, visitor_id, shopper, product_id, quantity, value, query)
        return (*values, moment, moment, now, "", "", "", {}), []

    return validate


def event_values(event: Event) -> EventValues:
    """An unsaved Event (from `tracking.build_event`) as the writer's row."""
    return tuple(getattr(event, name) for name in EVENT_COLUMNS)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def copy_line(values: EventValues) -> str:
    """One event as a line of PostgreSQL COPY text (this runs a million times per import, hence the shortcuts)."""
    parts: list[str] = []
    append = parts.append
    last_moment: datetime | None = None
    last_iso = ""
    for value in values:
        kind = value.__class__
        if kind is str:
            append(_copy_text(value))
        elif value is None:
            append("\\N")
        elif isinstance(value, datetime):
            if value is not last_moment:  # occurred_at and client_time are usually the same object
                last_moment, last_iso = value, value.isoformat()
            append(last_iso)
        elif kind is dict:
            append(_copy_text(json.dumps(value, separators=(",", ":"), cls=DjangoJSONEncoder)) if value else "{}")
        else:
            append(str(value))
    return "\t".join(parts) + "\n"


class EventWriter:
    """Inserts events in large batches and skips ids already stored; counts what it inserted and what it skipped.

    On PostgreSQL (psycopg2) a batch is COPied into a temporary table and moved with one
    INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING, several times faster than multi-row INSERTs.
    Elsewhere (SQLite) it reads which ids exist and bulk-creates the rest.
    """

    def __init__(self, batch_size: int = 20_000) -> None:
        self.batch_size = batch_size
        self.batch: list[EventValues] = []
        self.inserted = 0
        self.duplicates = 0
        self.refused = 0  # events of users who said no on their account (tracking.consent): never stored
        # copy_expert is psycopg2's; psycopg 3 has another COPY API, so it takes the portable path.
        self.use_copy = connection.vendor == "postgresql" and not is_psycopg3

    def add(self, values: EventValues) -> None:
        self.batch.append(values)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def add_event(self, event: Event) -> None:
        self.add(event_values(event))

    def flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        if self.use_copy:
            self._copy(io.StringIO("".join(map(copy_line, batch))), len(batch))
            return
        refused = opted_out_users(v[USER_ID] for v in batch if v[USER_ID])
        if refused:
            kept = [v for v in batch if v[USER_ID] not in refused]
            self.refused += len(batch) - len(kept)
            batch = kept
        with transaction.atomic():
            inserted = self._bulk_create(batch)
        self.inserted += inserted
        self.duplicates += len(batch) - inserted

    def copy_lines(self, lines: Iterable[str], progress: Any = None) -> None:
        """Write events already serialised by `copy_line` (PostgreSQL only), a batch at a time."""
        self.flush()
        buffer = io.StringIO()
        count = 0
        for line in lines:
            buffer.write(line)
            count += 1
            if count >= self.batch_size:
                self._copy(buffer, count, progress)
                buffer, count = io.StringIO(), 0
        if count:
            self._copy(buffer, count, progress)

    def _copy(self, buffer: io.StringIO, count: int, progress: Any = None) -> None:
        qn = connection.ops.quote_name
        opts = Event._meta
        fields = [opts.get_field(name) for name in EVENT_COLUMNS]
        columns = ", ".join(qn(f.column) for f in fields)
        # Names and types come from the model's metadata, never from the file.
        definition = ", ".join(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)
        buffer.seek(0)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS rec_event_import ({definition}) ON COMMIT DROP")
            cursor.execute("TRUNCATE rec_event_import")
            cursor.copy_expert(f"COPY rec_event_import ({columns}) FROM STDIN", buffer)
            user_column = qn(opts.get_field("user_id").column)
            if has_opt_outs():
                cursor.execute(f"SELECT DISTINCT {user_column} FROM rec_event_import WHERE {user_column} <> ''")  # noqa: S608
                refused = opted_out_users(row[0] for row in cursor.fetchall())
                if refused:
                    cursor.execute(
                        f"DELETE FROM rec_event_import WHERE {user_column} = ANY(%s)",  # noqa: S608
                        [sorted(refused)],
                    )
                    self.refused += max(cursor.rowcount, 0)
                    count -= max(cursor.rowcount, 0)
            cursor.execute(
                f"INSERT INTO {qn(opts.db_table)} ({columns}) SELECT {columns} FROM rec_event_import "  # noqa: S608
                f"ON CONFLICT ({qn(opts.get_field('event_id').column)}) DO NOTHING"
            )
            inserted = max(cursor.rowcount, 0)
        self.inserted += inserted
        self.duplicates += count - inserted
        if progress is not None:
            progress.update(count)

    def _bulk_create(self, batch: list[EventValues]) -> int:
        unique: dict[str, EventValues] = {}
        for values in batch:
            unique.setdefault(values[0], values)
        ids = list(unique)
        existing: set[str] = set()
        for start in range(0, len(ids), 900):  # stays under SQLite's bound-variable limit
            existing.update(
                Event.objects.filter(event_id__in=ids[start : start + 900]).values_list("event_id", flat=True)
            )
        fresh = [Event(**dict(zip(EVENT_COLUMNS, v, strict=True))) for eid, v in unique.items() if eid not in existing]
        Event.objects.bulk_create(fresh, ignore_conflicts=True, batch_size=2000)
        return len(fresh)


def import_event_file(
    path: str,
    fmt: str,
    *,
    now: datetime,
    skip_invalid: bool = False,
    progress: ProgressFactory | None = None,
    batch_size: int = 50_000,
) -> tuple[Scan, EventWriter]:
    """Validate the whole file, then insert its valid rows in one transaction; returns the scan and the counts.

    On PostgreSQL the validating pass also writes each valid row, already in COPY format, to a temporary file
    on disk, so the file is parsed once and the writing pass only streams that spool into COPY. Elsewhere the
    writing pass parses the file again. Raises ImportFileError or InvalidRows (nothing written) like the catalog.
    """
    progress = progress or no_progress
    writer = EventWriter(batch_size)
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n") as spool:
        found = Scan()
        with progress("validating", None) as bar:
            for values, problem in validated(path, fmt, EVENT_SPEC, event_validator(now)):
                found.add(problem)
                if values is not None and writer.use_copy:
                    spool.write(copy_line(values))
                bar.update(1)
        if found.bad and not skip_invalid:
            raise InvalidRows(found)
        with progress("importing", found.valid) as bar, transaction.atomic():
            if writer.use_copy:
                spool.seek(0)
                writer.copy_lines(spool, bar)
            else:
                for values, _problem in validated(path, fmt, EVENT_SPEC, event_validator(now)):
                    if values is not None:
                        writer.add(values)
                        bar.update(1)
                writer.flush()
    return found, writer
