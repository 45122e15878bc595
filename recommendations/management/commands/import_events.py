"""`manage.py import_events PATH`: load event history (views, carts, purchases...) from a CSV or JSONL file.

The file is validated whole before anything is written, then streamed into the Event table in large batches
(COPY on PostgreSQL). Events keep their own timestamps. Ids already stored count as duplicates, and a row
without an event_id gets one derived from its content, so importing the same file again changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from recommendations import importing
from recommendations.management.file_import import FileImportCommand


class Command(FileImportCommand):
    help = (
        "Import events from a CSV or JSONL file. Columns: event_type and timestamp (required), user_id and/or "
        "visitor_id (one per row is required), product_id (required for product events), event_id, quantity, "
        "value, query. Nothing is written if any row is invalid, unless --skip-invalid is given."
    )
    file_help = "The events file (.csv, .jsonl or .ndjson, optionally .gz)."
    unit = "events"

    def import_file(
        self, path: str, fmt: str, *, now: datetime, skip_invalid: bool, progress: importing.ProgressFactory
    ) -> tuple[str, importing.Scan]:
        found, writer = importing.import_event_file(path, fmt, now=now, skip_invalid=skip_invalid, progress=progress)
        return (
            f"Imported {writer.inserted} events; {writer.duplicates} duplicates skipped "
            f"(already stored, or repeated in the file); {found.bad} invalid rows skipped"
            + (f"; {writer.refused} of users who refused tracking not stored." if writer.refused else "."),
            found,
        )
