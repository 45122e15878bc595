"""The catalog import (`import_catalog`): product rows checked as a whole, then written in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction

from recommendations.api.validation import (
    MAX_ID_LENGTH,
)
from recommendations.importing.files import (
    MAX_TEXT,
    FileSpec,
    InvalidRows,
    ProgressFactory,
    Record,
    Row,
    Scan,
    Validator,
    is_blank,
    no_progress,
    parse_bool,
    parse_decimal,
    parse_text,
    parse_time,
    scan,
    validated,
)

MAX_DESCRIPTION = 100_000

CATALOG_SPEC = FileSpec(
    required=("product_id", "name", "category", "brand", "price"),
    optional=("in_stock", "description", "created_at"),
)


def catalog_validator(now: datetime) -> Validator:
    """A validator of catalog rows; remembers product ids so a repeated one is reported with its first line."""
    first_line: dict[str, int] = {}

    def validate(record: Record, line: int) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
        row = Row(record)
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
    if is_blank(raw):
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

    progress = progress or no_progress
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
