"""`manage.py import_events PATH`: load event history (views, carts, purchases...) from a CSV or JSONL file.

The file is validated whole before anything is written, then streamed into the Event table in large batches
(COPY on PostgreSQL). Events keep their own timestamps. Ids already stored count as duplicates, and a row
without an event_id gets one derived from its content, so importing the same file again changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from recommendations import importing


class Command(BaseCommand):
    help = (
        "Import events from a CSV or JSONL file. Columns: event_type and timestamp (required), user_id and/or "
        "visitor_id (one per row is required), product_id (required for product events), event_id, quantity, "
        "value, query. Nothing is written if any row is invalid, unless --skip-invalid is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The events file (.csv, .jsonl or .ndjson, optionally .gz).")
        parser.add_argument("--format", choices=importing.FORMATS, help="Override the format the file name implies.")
        parser.add_argument("--skip-invalid", action="store_true", help="Import the valid rows, report the others.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw progress bars.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: str = options["path"]
        try:
            fmt = importing.detect_format(path, options["format"])
            found, writer = importing.import_event_file(
                path,
                fmt,
                now=timezone.now(),
                skip_invalid=options["skip_invalid"],
                progress=importing.tqdm_progress(options["no_progress"], "events"),
            )
        except importing.ImportFileError as exc:
            raise CommandError(f"{path}: {exc}; nothing was imported.") from None
        except importing.InvalidRows as exc:
            raise CommandError(exc.scan.refusal(path)) from None
        self.stdout.write(
            f"Imported {writer.inserted} events; {writer.duplicates} duplicates skipped "
            f"(already stored, or repeated in the file); {found.bad} invalid rows skipped."
        )
        if found.bad:
            self.stderr.write(f"Invalid rows:\n{found.report()}")
