"""`manage.py import_catalog PATH`: upsert the engine's product profiles from a CSV or JSONL catalog file.

For a shop whose products live outside Django: the rows become ProductProfile rows (keyed by product_id) that
the engine trains on and serving filters by. The whole file is checked first; a bad row stops the import before
anything is written unless --skip-invalid is given.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from recommendations import importing


class Command(BaseCommand):
    help = (
        "Upsert product profiles from a CSV or JSONL file. Columns: product_id, name, category, brand, price "
        "(required) and in_stock, description, created_at (optional). Nothing is written if any row is invalid, "
        "unless --skip-invalid is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The catalog file (.csv, .jsonl or .ndjson, optionally .gz).")
        parser.add_argument("--format", choices=importing.FORMATS, help="Override the format the file name implies.")
        parser.add_argument("--skip-invalid", action="store_true", help="Import the valid rows, report the others.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw progress bars.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: str = options["path"]
        try:
            fmt = importing.detect_format(path, options["format"])
            result = importing.import_catalog_file(
                path,
                fmt,
                now=timezone.now(),
                skip_invalid=options["skip_invalid"],
                progress=importing.tqdm_progress(options["no_progress"], "products"),
            )
        except importing.ImportFileError as exc:
            raise CommandError(f"{path}: {exc}; nothing was imported.") from None
        except importing.InvalidRows as exc:
            raise CommandError(exc.scan.refusal(path)) from None
        self.stdout.write(
            f"Imported {result.created + result.updated} products ({result.created} new, {result.updated} updated); "
            f"{result.scan.bad} invalid rows skipped."
        )
        if result.scan.bad:
            self.stderr.write(f"Invalid rows:\n{result.scan.report()}")
