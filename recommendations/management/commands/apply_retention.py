"""`manage.py apply_retention [--dry-run]`: delete events past the retention window now, with a progress bar.

The daily `recommendations.tasks.apply_retention` task does the same; run this after setting EVENT_RETENTION_DAYS
on a shop with a long history, or to see what the next run would delete (`--dry-run`).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from tqdm import tqdm

from recommendations import retention


class Command(BaseCommand):
    help = "Delete events (and impressions) older than RECOMMENDATIONS['EVENT_RETENTION_DAYS'] in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()  # one clock for the count, the deletes and the summary
        limits = retention.cutoffs(now)
        if not limits.active:
            self.stdout.write(
                _("Retention is off (EVENT_RETENTION_DAYS and IMPRESSION_RETENTION_DAYS are None): nothing deleted.")
            )
            return
        total = retention.count_expired(now)
        if options["dry_run"]:
            self.stdout.write(
                ngettext("%(count)d event would be deleted.", "%(count)d events would be deleted.", total)
                % {"count": total}
            )
            return
        with tqdm(total=total, desc="events", unit=" events", file=sys.stderr, disable=options["no_progress"]) as bar:
            counts = retention.apply_retention(now, on_batch=bar.update)
        self.stdout.write(
            _(
                "Deleted %(events)d events that happened before %(events_cutoff)s and %(impressions)d impressions "
                "before %(impressions_cutoff)s."
            )
            % {
                "events": counts["events"],
                "events_cutoff": limits.events.isoformat(timespec="seconds") if limits.events else "-",
                "impressions": counts["impressions"],
                "impressions_cutoff": (limits.impressions.isoformat(timespec="seconds") if limits.impressions else "-"),
            }
        )
