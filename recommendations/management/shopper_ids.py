"""The ids `erase_shopper` and `export_shopper` are given: --user and --visitor (each repeatable) and --file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils.translation import gettext as _


def add_id_arguments(parser: CommandParser) -> None:
    parser.add_argument("--user", action="append", default=[], metavar="ID", help="A user id (repeatable).")
    parser.add_argument("--visitor", action="append", default=[], metavar="ID", help="A visitor id (repeatable).")
    parser.add_argument(
        "--file",
        metavar="PATH",
        help="A file of ids, one a line: u:<user id> or v:<visitor id>; blank lines and lines starting with # skipped.",
    )


def read_ids(options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(user ids, visitor ids) from the options; a bad file or line is one CommandError line, naming where."""
    users, visitors = list(options["user"]), list(options["visitor"])
    if options.get("file"):
        path = Path(options["file"])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(_("Cannot read %(path)s: %(error)s") % {"path": path, "error": exc}) from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kind, sep, value = line.partition(":")
            if not sep or kind not in ("u", "v") or not value.strip():
                raise CommandError(
                    _("%(path)s line %(line)s: expected u:<user id> or v:<visitor id>") % {"path": path, "line": number}
                )
            (users if kind == "u" else visitors).append(value.strip())
    if not users and not visitors:
        raise CommandError(_("Name at least one shopper: --user ID, --visitor ID or --file PATH."))
    return users, visitors
