"""The command side of importing one CSV or JSONL file, shared by `import_catalog` and `import_events`.

Both take the same arguments, refuse a bad file with the same messages and report skipped rows the same way; only
what is imported and the one-line summary differ, so a subclass names its file and unit and runs the import.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.translation import gettext as _

from recommendations import importing


class FileImportCommand(BaseCommand):
    """A command that imports the file at PATH: the whole file is checked before anything is written."""

    file_help = "The file (.csv, .jsonl or .ndjson, optionally .gz)."
    unit = "rows"  # what the importing progress bar counts

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help=self.file_help)
        parser.add_argument("--format", choices=importing.FORMATS, help="Override the format the file name implies.")
        parser.add_argument("--skip-invalid", action="store_true", help="Import the valid rows, report the others.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw progress bars.")

    def import_file(
        self, path: str, fmt: str, *, now: datetime, skip_invalid: bool, progress: importing.ProgressFactory
    ) -> tuple[str, importing.Scan]:
        """Import the file; return the summary line for stdout and the validating pass's scan."""
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        path: str = options["path"]
        try:
            fmt = importing.detect_format(path, options["format"])
            summary, found = self.import_file(
                path,
                fmt,
                now=timezone.now(),
                skip_invalid=options["skip_invalid"],
                progress=importing.tqdm_progress(options["no_progress"], self.unit),
            )
        except importing.ImportFileError as exc:
            raise CommandError(_("%(path)s: %(error)s; nothing was imported.") % {"path": path, "error": exc}) from None
        except importing.InvalidRows as exc:
            raise CommandError(exc.scan.refusal(path)) from None
        self.stdout.write(summary)
        if found.bad:
            self.stderr.write(_("Invalid rows:") + f"\n{found.report()}")
