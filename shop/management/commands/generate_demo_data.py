"""`manage.py generate_demo_data`: fill an empty demo shop with a realistic synthetic catalog and history.

The generator itself lives in `shop.demo_data`; this command checks the arguments and the catalog, draws the
progress bars and prints what was written. It then rebuilds the analytics of the generated days (as
`refresh_analytics --days N` would), so the admin's analytics page shows the history at once rather than after the
hourly task or a "Refresh now".
"""

from __future__ import annotations

import sys
from datetime import UTC, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from recommendations.analytics import rebuild_days
from shop.demo_data import generate
from shop.models import Product


class Command(BaseCommand):
    help = (
        "Generate a synthetic shop (categories, brands, products, shoppers, sessions, orders, events), "
        "deterministic for a given --seed. Refuses to run on a catalog that already has products."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=300, help="Registered shoppers (default 300).")
        parser.add_argument("--products", type=int, default=200, help="Products (default 200).")
        parser.add_argument("--days", type=int, default=60, help="Length of the simulated history (default 60).")
        parser.add_argument("--seed", type=int, default=7, help="Random seed (default 7).")
        parser.add_argument(
            "--now", help="End of the simulated history as ISO-8601 (default: now); fixes timestamps for tests."
        )
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when the catalog already has products.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        users, products, days = options["users"], options["products"], options["days"]
        problems = [
            f"--{name} must be at least {least}, not {value}"
            for name, value, least in (("users", users, 1), ("products", products, 1), ("days", days, 1))
            if value < least
        ]
        if options["seed"] < 0:
            problems.append(f"--seed must not be negative, not {options['seed']}")
        now = timezone.now()
        if options["now"]:
            parsed = parse_datetime(options["now"])
            if parsed is None:
                problems.append(f"--now must be an ISO-8601 date-time, not {options['now']!r}")
            else:
                now = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if problems:
            raise CommandError("\n".join(problems))

        existing = Product.objects.count()
        if existing:
            if options["if_empty"]:
                self.stdout.write(f"The catalog already has {existing} products; no demo data generated.")
                return
            raise CommandError(
                f"The catalog already has {existing} products; demo data is only generated into an empty shop "
                "(start from a fresh database, or pass --if-empty to skip quietly)."
            )

        with tqdm(total=users, desc="shoppers", unit=" users", file=sys.stderr, disable=options["no_progress"]) as bar:
            stats = generate(
                users=users, products=products, days=days, seed=options["seed"], now=now, progress=bar.update
            )
        first_day = timezone.localdate(now - timedelta(days=days))
        last_day = timezone.localdate(now)
        span = (last_day - first_day).days + 1
        rows = 0
        with tqdm(total=span, desc="analytics", unit=" days", file=sys.stderr, disable=options["no_progress"]) as bar:
            for offset in range(span):
                day = first_day + timedelta(days=offset)
                rows += rebuild_days(day, day)
                bar.update(1)
        by_type = ", ".join(f"{name} {count}" for name, count in sorted(stats.by_type.items()))
        self.stdout.write(
            f"Generated {products} products, {stats.users} users and {stats.visitors} anonymous visitors over "
            f"{days} days: {stats.sessions} sessions, {stats.events} events ({by_type}), {stats.orders} orders, "
            f"{stats.favorites} favourites.\n"
            f"Rebuilt analytics for {first_day} to {last_day}: {rows} placement-day rows."
        )
