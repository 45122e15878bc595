"""`manage.py export_shopper --user ID ... --visitor ID ... [--output file.json]`: a shopper's access request.

Writes one JSON document (docs/privacy.md describes the format) with every event and stored list of the shoppers
named, to stdout or a file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from recommendations import privacy
from recommendations.management.shopper_ids import add_id_arguments, read_ids


class Command(BaseCommand):
    help = "Export every event and stored list the app keeps about the shoppers named, as one JSON document."

    def add_arguments(self, parser: CommandParser) -> None:
        add_id_arguments(parser)
        parser.add_argument("--output", metavar="PATH", help="Write the document here instead of to stdout.")

    def handle(self, *args: Any, **options: Any) -> None:
        users, visitors = read_ids(options)
        try:
            document = privacy.export(users, visitors)
        except privacy.InvalidSubjects as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from None
        text = json.dumps(document, ensure_ascii=False, indent=1)
        if not options.get("output"):
            self.stdout.write(text)
            return
        path = Path(options["output"])
        try:
            path.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise CommandError(_("Cannot write %(path)s: %(error)s") % {"path": path, "error": exc}) from None
        sys.stderr.write(
            _("Exported %(events)s events and %(lists)s stored lists to %(path)s.\n")
            % {"events": document["counts"]["events"], "lists": document["counts"]["stored_lists"], "path": path}
        )
