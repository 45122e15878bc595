"""`manage.py refresh_analytics [--days N]`: rebuild the daily analytics of the last N days now, a day at a time.

The hourly task rebuilds yesterday and today; run this after installing the app or importing history to fill in
older days. Each day is replaced in its own transaction, so an interrupted run leaves whole days behind it.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import ngettext
from tqdm import tqdm

from recommendations.analytics import local_today, rebuild_days

MAX_DAYS = 3660  # ten years; more is a typo


class Command(BaseCommand):
    help = "Rebuild the per placement and day analytics (impressions, clicks, attributed sales) of the last N days."

    def add_arguments(self, parser: CommandParser) -> None:
        # Read as text and checked here, so a bad value is one line of error rather than argparse's usage block.
        parser.add_argument("--days", default="2", help="How many days back, today included (default 2).")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        raw = str(options["days"]).strip()
        days = int(raw) if raw.isdigit() else 0
        if not 1 <= days <= MAX_DAYS:
            raise CommandError(f"--days must be a whole number from 1 to {MAX_DAYS}, not {raw!r}")
        today = local_today()
        start = today - timedelta(days=days - 1)
        rows = 0
        with tqdm(total=days, desc="days", unit=" days", file=sys.stderr, disable=options["no_progress"]) as bar:
            for offset in range(days):
                day = start + timedelta(days=offset)
                rows += rebuild_days(day, day)
                bar.update(1)
        self.stdout.write(
            ngettext(
                "Rebuilt analytics for %(start)s to %(end)s: %(rows)s placement-day row.",
                "Rebuilt analytics for %(start)s to %(end)s: %(rows)s placement-day rows.",
                rows,
            )
            % {"start": start, "end": today, "rows": rows}
        )
