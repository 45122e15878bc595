"""Reading catalog and event files for `import_catalog` and `import_events`, and the fast bulk event writer.

Both imports check the whole file before writing anything: a first pass keeps only the problems (one per bad row,
naming the line and the field), a second pass streams the good rows into the database in one transaction. Neither
pass holds more than one batch of rows, so a file of a million events never sits in memory (on PostgreSQL the
first pass spools the valid events, already in COPY format, to a temporary file on disk so the file is parsed once).
Field rules follow the ingest API's (`recommendations.api.validation`) so an event the API refuses is refused here
too, with two differences that suit history: the timestamp is required, and a timestamp in the future is an error
rather than replaced by "now". Like the API, an event older than EVENT_MAX_AGE_DAYS is refused (a bad row, reported
with its line; --skip-invalid imports the others): clamping it would invent a time the file never said.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from tqdm import tqdm

from recommendations.api.validation import (
    CENTS,
    CLOCK_SKEW,
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    MAX_VALUE,
    NEEDS_PRODUCT,
    oldest_event_time,
    parse_timestamp,
    too_old,
)
from recommendations.conf import EVENT_TYPES
from recommendations.models import Event, shopper_key
from recommendations.tracking import EVENT_COLUMNS

try:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3
except ImportError:  # no PostgreSQL driver installed: the portable path is used anyway
    is_psycopg3 = False

FORMATS = ("csv", "jsonl")
EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_REPORTED = 20
MAX_TEXT = 255
MAX_QUERY = 255
MAX_QUERY_INPUT = 10_000  # longer queries are refused; up to this they are cut to MAX_QUERY like the API does
MAX_DESCRIPTION = 100_000
_EVENT_TYPES = frozenset(EVENT_TYPES)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

EventValues = tuple[Any, ...]  # one value per EVENT_COLUMNS entry
# (description, total or None) -> a progress bar (tqdm-like: update(n), usable as a context manager).
ProgressFactory = Callable[[str, int | None], AbstractContextManager[Any]]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def _no_progress(description: str, total: int | None) -> AbstractContextManager[Any]:
    return nullcontext(_NoBar())


def tqdm_progress(disabled: bool, unit: str) -> ProgressFactory:
    """tqdm bars on stderr for the two passes: validating counts rows, importing counts `unit`."""

    def make(description: str, total: int | None) -> tqdm:
        return tqdm(
            desc=f"{description:<10}",
            total=total,
            unit=f" {'rows' if total is None else unit}",
            file=sys.stderr,
            disable=disabled,
        )

    return make


class ImportFileError(Exception):
    """A problem with the file as a whole (empty, unreadable, wrong header); nothing can be imported."""


class InvalidRows(Exception):
    """Some rows are bad and the caller did not ask to skip them; `scan` says which."""

    def __init__(self, found: Scan) -> None:
        super().__init__(found.report())
        self.scan = found


@dataclass(frozen=True)
class FileSpec:
    """Which columns a file must have, may have, and of which at least one must be present."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()

    @property
    def known(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


CATALOG_SPEC = FileSpec(
    required=("product_id", "name", "category", "brand", "price"),
    optional=("in_stock", "description", "created_at"),
)
EVENT_SPEC = FileSpec(
    required=("event_type", "timestamp"),
    optional=("event_id", "user_id", "visitor_id", "product_id", "quantity", "value", "query"),
    any_of=("user_id", "visitor_id"),
)


@dataclass
class RowProblem:
    """Everything wrong with one row, reported as one line: `line 7: price: must be a decimal number`."""

    line: int
    problems: list[tuple[str, str]]

    def __str__(self) -> str:
        return f"line {self.line}: " + "; ".join(f"{name}: {why}" for name, why in self.problems)


@dataclass
class Scan:
    """What the validating pass found: counts and the first few problems."""

    rows: int = 0
    valid: int = 0
    bad: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    def add(self, problem: RowProblem | None) -> None:
        self.rows += 1
        if problem is None:
            self.valid += 1
            return
        self.bad += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)

    def refusal(self, path: str) -> str:
        """The message of an import stopped by bad rows."""
        return (
            f"{path}: {self.bad} of {self.rows} rows are invalid; nothing was imported "
            f"(--skip-invalid imports the {self.valid} valid rows and reports the others).\n{self.report()}"
        )

    def report(self) -> str:
        """One line per bad row, the first MAX_REPORTED of them, then how many more there are."""
        lines = [str(p) for p in self.problems]
        if self.bad > len(self.problems):
            lines.append(f"... and {self.bad - len(self.problems)} more")
        return "\n".join(lines)


def detect_format(path: str, explicit: str | None = None) -> str:
    """The format named by --format, else the one the file name says (a trailing .gz is looked through)."""
    if explicit:
        if explicit not in FORMATS:
            raise ImportFileError(f"unknown format {explicit!r}; use one of: {', '.join(FORMATS)}")
        return explicit
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    fmt = EXTENSIONS.get(Path(name).suffix)
    if fmt is None:
        raise ImportFileError(f"cannot tell the format of {path} from its name; pass --format csv or --format jsonl")
    return fmt


def _open(path: str) -> IO[str]:
    try:
        if path.lower().endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from None


Record = dict[str, Any]
ReadItem = tuple[int, Record | None, RowProblem | None]


def _csv_records(handle: IO[str], spec: FileSpec) -> Iterator[ReadItem]:
    reader = csv.reader(handle)
    header: list[str] | None = None
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank lines carry nothing
        if header is None:
            header = [name.strip().lower() for name in row]
            _check_header(header, spec, reader.line_num)
            continue
        if len(row) != len(header):
            yield (
                reader.line_num,
                None,
                RowProblem(reader.line_num, [("row", f"has {len(row)} fields, the header has {len(header)}")]),
            )
            continue
        yield reader.line_num, dict(zip(header, row, strict=True)), None
    if header is None:
        raise ImportFileError("the file is empty (no header row)")


def _check_header(header: list[str], spec: FileSpec, line: int) -> None:
    problems = []
    missing = [name for name in spec.required if name not in header]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    if spec.any_of and not any(name in header for name in spec.any_of):
        problems.append(f"needs at least one of the columns: {', '.join(spec.any_of)}")
    unknown = [name for name in header if name not in spec.known]
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)} (known: {', '.join(spec.known)})")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        problems.append(f"repeated column(s): {', '.join(repeated)}")
    if problems:
        raise ImportFileError(f"header (line {line}): " + "; ".join(problems))


def _jsonl_records(handle: IO[str], spec: FileSpec) -> Iterator[ReadItem]:
    known = set(spec.known)
    seen_any = False
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        seen_any = True
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, None, RowProblem(number, [("row", f"not valid JSON ({exc.msg} at column {exc.colno})")])
            continue
        if not isinstance(record, dict):
            yield number, None, RowProblem(number, [("row", "must be a JSON object")])
            continue
        unknown = [key for key in record if key not in known]
        if unknown:
            yield number, None, RowProblem(number, [(key, "unknown field") for key in unknown])
            continue
        yield number, record, None
    if not seen_any:
        raise ImportFileError("the file is empty")


def read_records(path: str, fmt: str, spec: FileSpec) -> Iterator[ReadItem]:
    """(line number, record or None, problem or None) for every row of the file, in order."""
    reader = _csv_records if fmt == "csv" else _jsonl_records
    with _open(path) as handle:
        try:
            yield from reader(handle, spec)
        except UnicodeDecodeError:
            raise ImportFileError(f"{path} is not UTF-8 text") from None
        except csv.Error as exc:
            raise ImportFileError(f"{path} is not readable CSV: {exc}") from None


# Called with (record, line number); returns the clean value and the row's problems as (field, why) pairs.
Validator = Callable[[Record, int], tuple[Any, list[tuple[str, str]]]]


def validated(path: str, fmt: str, spec: FileSpec, validate: Validator) -> Iterator[tuple[Any, RowProblem | None]]:
    """(clean value or None, problem or None) per row: the reading problems and the validator's, per line."""
    for line, record, problem in read_records(path, fmt, spec):
        if problem is not None:
            yield None, problem
            continue
        value, problems = validate(record, line)
        yield (None, RowProblem(line, problems)) if problems else (value, None)


def scan(path: str, fmt: str, spec: FileSpec, validate: Validator, progress: Any = None) -> Scan:
    """The validating pass: counts and problems only, nothing kept or written."""
    result = Scan()
    for _value, problem in validated(path, fmt, spec, validate):
        result.add(problem)
        if progress is not None:
            progress.update(1)
    return result


# -- field parsers: each returns the clean value or raises ValueError saying why -------------------------------


def _blank(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


def parse_text(raw: Any, limit: int = MAX_TEXT, required: bool = False) -> str:
    if raw.__class__ is str:  # the common case first: this runs for most fields of a million rows
        text = raw.strip()
        if text and len(text) <= limit and "\x00" not in text:
            return text
    if _blank(raw):
        if required:
            raise ValueError("is required")
        return ""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError(f"must be text, not {raw!r}")
    text = str(raw).strip()
    if len(text) > limit:
        raise ValueError(f"must be at most {limit} characters")
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


def parse_decimal(raw: Any) -> Decimal:
    """A non-negative amount, rounded to cents; JSON numbers and strings both work."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"must be a decimal number, not {raw!r}")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"must be a decimal number, not {raw!r}") from None
    if not value.is_finite():
        raise ValueError(f"must be a finite decimal number, not {raw!r}")
    if value < 0:
        raise ValueError(f"must not be negative ({raw!r})")
    if value > MAX_VALUE:
        raise ValueError(f"must be at most {MAX_VALUE}")
    return value.quantize(CENTS, rounding=ROUND_HALF_UP)


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"must be true/false, 1/0 or yes/no, not {raw!r}")


def parse_quantity(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"must be a whole number, not {raw!r}")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if not isinstance(raw, int):
        raise ValueError(f"must be a whole number, not {raw!r}")
    if not 1 <= raw <= MAX_QUANTITY:
        raise ValueError(f"must be between 1 and {MAX_QUANTITY}, not {raw}")
    return raw


def parse_time(raw: Any, now: datetime | None = None, oldest: datetime | None = None) -> datetime:
    """ISO-8601 (naive means UTC) or Unix seconds; a moment beyond the allowed clock skew of `now`, or before
    `oldest` (events: EVENT_MAX_AGE_DAYS ago), is refused."""
    if _blank(raw):
        raise ValueError("is required")
    try:
        moment = parse_timestamp(raw.strip() if isinstance(raw, str) else raw)
    except ValueError as exc:
        raise ValueError(f"{exc} ({raw!r})") from None
    if now is not None and moment > now + CLOCK_SKEW:
        raise ValueError(f"{moment.isoformat()} is in the future")
    if oldest is not None and moment < oldest:
        raise ValueError(too_old(moment, oldest))
    return moment


class _Row:
    """One record's fields, parsed one by one; collects every problem so a row reports all of them at once."""

    __slots__ = ("problems", "record")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.problems: list[tuple[str, str]] = []

    def get(self, name: str, parse: Callable[..., Any], *args: Any) -> Any:
        try:
            return parse(self.record.get(name), *args)
        except ValueError as exc:
            self.problems.append((name, str(exc)))
            return None

    def optional(self, name: str, parse: Callable[..., Any], default: Any) -> Any:
        """The default when the field is absent or blank, else the parsed value."""
        raw = self.record.get(name)
        if raw is None or raw == "" or (raw.__class__ is str and not raw.strip()):
            return default
        return self.get(name, parse)

    def problem(self, name: str, why: str) -> None:
        self.problems.append((name, why))

    def has_problem(self, name: str) -> bool:
        return any(field_name == name for field_name, _ in self.problems)


# -- catalog --------------------------------------------------------------------------------------------------------


def catalog_validator(now: datetime) -> Validator:
    """A validator of catalog rows; remembers product ids so a repeated one is reported with its first line."""
    first_line: dict[str, int] = {}

    def validate(record: Record, line: int) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
        row = _Row(record)
        product_id = row.get("product_id", parse_text, MAX_ID_LENGTH, True)
        profile: dict[str, Any] = {
            "product_id": product_id,
            "name": row.get("name", parse_text, MAX_TEXT, True),
            "category": row.get("category", parse_text, MAX_TEXT),
            "brand": row.get("brand", parse_text, MAX_TEXT),
            "price": row.get("price", _required_decimal),
            "active": True,
        }
        # Optional columns: a column the file leaves out leaves the stored value alone.
        if "in_stock" in record:
            profile["in_stock"] = row.optional("in_stock", parse_bool, True)
        if "description" in record:
            profile["text"] = row.get("description", parse_text, MAX_DESCRIPTION)
        if "created_at" in record:
            profile["created_at"] = row.optional("created_at", lambda raw: parse_time(raw, now), None)
        if product_id:
            if product_id in first_line:
                row.problem("product_id", f"{product_id!r} is repeated (first on line {first_line[product_id]})")
            else:
                first_line[product_id] = line
        return (None if row.problems else profile), row.problems

    return validate


def _required_decimal(raw: Any) -> Decimal:
    if _blank(raw):
        raise ValueError("is required")
    return parse_decimal(raw)


@dataclass
class CatalogImport:
    scan: Scan
    created: int = 0
    updated: int = 0


def import_catalog_file(
    path: str, fmt: str, *, now: datetime, skip_invalid: bool = False, progress: ProgressFactory | None = None
) -> CatalogImport:
    """Validate the whole file, then upsert its valid rows into ProductProfile in one transaction.

    Raises ImportFileError for a file that cannot be read as a whole and InvalidRows when a row is bad and
    `skip_invalid` is off; in both cases nothing is written.
    """
    from recommendations.catalog import SYNC_BATCH, upsert_profiles
    from recommendations.models import ProductProfile

    progress = progress or _no_progress
    with progress("validating", None) as bar:
        result = CatalogImport(scan(path, fmt, CATALOG_SPEC, catalog_validator(now), bar))
    if result.scan.bad and not skip_invalid:
        raise InvalidRows(result.scan)

    def write(batch: list[dict[str, Any]]) -> None:
        existing = set(
            ProductProfile.objects.filter(product_id__in=[p["product_id"] for p in batch]).values_list(
                "product_id", flat=True
            )
        )
        # Rows naming different columns (possible in JSONL) are upserted apart, so a column a row leaves out
        # keeps its stored value instead of being reset to the default.
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}
        for profile in batch:
            groups.setdefault(frozenset(profile), []).append(profile)
        for rows in groups.values():
            upsert_profiles(rows)
        result.updated += len(existing)
        result.created += len(batch) - len(existing)

    with progress("importing", result.scan.valid) as bar, transaction.atomic():
        batch: list[dict[str, Any]] = []
        for profile, _problem in validated(path, fmt, CATALOG_SPEC, catalog_validator(now)):
            if profile is None:
                continue
            batch.append(profile)
            if len(batch) >= SYNC_BATCH:
                write(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            write(batch)
            bar.update(len(batch))
    return result


# -- events -----------------------------------------------------------------------------------------------------------


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
        row = _Row(record)
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
    progress = progress or _no_progress
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
