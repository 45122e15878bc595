"""Reading an import file: format detection, CSV and JSONL records checked against a `FileSpec`, the field parsers
and the two-pass scan both imports share (the catalog's and the events').

Neither pass holds more than one batch of rows, so a file of a million rows never sits in memory.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from recommendations.api.validation import (
    CENTS,
    CLOCK_SKEW,
    MAX_QUANTITY,
    MAX_VALUE,
    UNSTORABLE,
    check_storable,
    parse_timestamp,
    too_old,
)

FORMATS = ("csv", "jsonl")
EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_REPORTED = 20
MAX_TEXT = 255

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

# (description, total or None) -> a progress bar (tqdm-like: update(n), usable as a context manager).
ProgressFactory = Callable[[str, int | None], AbstractContextManager[Any]]


class NoBar:
    """The bar `no_progress` hands out: the imports call `update` either way."""

    def update(self, n: int = 1) -> None:
        pass


def no_progress(description: str, total: int | None) -> AbstractContextManager[Any]:
    """The progress factory when the caller wants no bars (tests, the demo data)."""
    return nullcontext(NoBar())


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


def is_blank(raw: Any) -> bool:
    """Whether a field is missing or whitespace: both imports read it as absent."""
    return raw is None or (isinstance(raw, str) and not raw.strip())


def parse_text(raw: Any, limit: int = MAX_TEXT, required: bool = False) -> str:
    if raw.__class__ is str:  # the common case first: this runs for most fields of a million rows
        text = raw.strip()
        if text and len(text) <= limit and UNSTORABLE.search(text) is None:
            return text
    if is_blank(raw):
        if required:
            raise ValueError("is required")
        return ""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError(f"must be text, not {raw!r}")
    text = str(raw).strip()
    if len(text) > limit:
        raise ValueError(f"must be at most {limit} characters")
    check_storable(text)  # NUL or a lone surrogate: this row is refused by name, not the whole COPY
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
    if is_blank(raw):
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


class Row:
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
