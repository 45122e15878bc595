"""`manage.py erase_shopper --user ID ... --visitor ID ... --file ids.txt`: erase what the app keeps about shoppers.

Events go in batches (a progress bar on stderr), then stored lists and cache keys; one summary line at the end, and
an ErasureRequest row records who ran it and the counts, never the ids. Running it again finds nothing left.
"""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from recommendations import privacy
from recommendations.management.shopper_ids import add_id_arguments, read_ids
from recommendations.management.stage_bars import StageBars


class Command(BaseCommand):
    help = "Erase every event, stored list and cache key the app keeps about the shoppers named."

    def add_arguments(self, parser: CommandParser) -> None:
        add_id_arguments(parser)
        parser.add_argument(
            "--batch-size", default=str(privacy.BATCH_SIZE), help="Events deleted per transaction (default 5000)."
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        users, visitors = read_ids(options)
        raw = str(options["batch_size"]).strip()
        if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
            raise CommandError(
                _("--batch-size must be a whole number from 1 to 1000000, not %(value)r") % {"value": raw}
            )
        bars = StageBars(enabled=not options["no_progress"])
        try:
            record = privacy.erase(
                users,
                visitors,
                requested_by=f"{_who()} (manage.py erase_shopper)",
                via="command",
                batch_size=int(raw),
                progress=bars,
            )
        except privacy.InvalidSubjects as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from None
        finally:
            bars.close()
        counts = record.counts
        self.stdout.write(
            ngettext(
                "Erased %(subjects)s shopper id: %(events)s events, %(lists)s stored lists, %(keys)s cache keys "
                "(erasure #%(pk)s). Retrain so the next model never learned from them: manage.py train_recommender.",
                "Erased %(subjects)s shopper ids: %(events)s events, %(lists)s stored lists, %(keys)s cache keys "
                "(erasure #%(pk)s). Retrain so the next model never learned from them: manage.py train_recommender.",
                record.subjects,
            )
            % {
                "subjects": record.subjects,
                "events": counts["events"],
                "lists": counts["stored_lists"],
                "keys": "?" if counts["cache_keys"] is None else counts["cache_keys"],
                "pk": record.pk,
            }
        )


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
