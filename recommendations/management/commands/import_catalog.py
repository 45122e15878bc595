"""`manage.py import_catalog PATH`: upsert the engine's product profiles from a CSV or JSONL catalog file.

For a shop whose products live outside Django: the rows become ProductProfile rows (keyed by product_id) that
the engine trains on and serving filters by. The whole file is checked first; a bad row stops the import before
anything is written unless --skip-invalid is given.
"""

from __future__ import annotations

from datetime import datetime

from recommendations import importing
from recommendations.management.file_import import FileImportCommand


class Command(FileImportCommand):
    help = (
        "Upsert product profiles from a CSV or JSONL file. Columns: product_id, name, category, brand, price "
        "(required) and in_stock, description, created_at (optional). Nothing is written if any row is invalid, "
        "unless --skip-invalid is given."
    )
    file_help = "The catalog file (.csv, .jsonl or .ndjson, optionally .gz)."
    unit = "products"

    def import_file(
        self, path: str, fmt: str, *, now: datetime, skip_invalid: bool, progress: importing.ProgressFactory
    ) -> tuple[str, importing.Scan]:
        result = importing.import_catalog_file(path, fmt, now=now, skip_invalid=skip_invalid, progress=progress)
        return (
            f"Imported {result.created + result.updated} products ({result.created} new, {result.updated} updated); "
            f"{result.scan.bad} invalid rows skipped.",
            result.scan,
        )
