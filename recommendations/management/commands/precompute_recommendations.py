"""`manage.py precompute_recommendations`: run a precompute in this process, with progress and a summary table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from recommendations.lists.precompute import STAGES, run_precompute
from recommendations.management.stage_bars import StageBars

PLACEMENTS = ("for_you", "similar", "trending", "bought_together", "buy_again")


def _in_stage_order(seconds: dict[str, float]) -> list[tuple[str, float]]:
    # The stats come back from a JSON column, which does not keep key order.
    order = {stage: i for i, stage in enumerate(STAGES)}
    return sorted(seconds.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))


class Command(BaseCommand):
    help = (
        "Compute trending, similar, bought_together, buy_again and for_you lists now (in this process, not through "
        "Celery) and switch them on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-progress", action="store_true", help="Do not draw progress bars.")

    def handle(self, *args: Any, **options: Any) -> None:
        bars = StageBars(enabled=not options["no_progress"])
        try:
            run = run_precompute(on_progress=bars)
        except Exception as exc:
            bars.close()
            raise CommandError(f"precompute failed: {type(exc).__name__}: {exc}") from exc
        bars.close()
        self.stdout.write(self.summary(run.stats, run.pk, run.recommendation_set_id))

    @staticmethod
    def summary(stats: dict[str, Any], run_id: int, set_id: int | None) -> str:
        lists = stats.get("lists", {})
        rows = [
            ("events used", stats.get("events_used", 0)),
            ("shoppers", stats.get("shoppers", 0)),
            ("products", stats.get("products", 0)),
            ("products with events", stats.get("products_with_events", 0)),
            ("newest event", stats.get("newest_event") or "-"),
            *((f"lists: {placement}", lists.get(placement, 0)) for placement in PLACEMENTS),
            ("sales counts changed", stats.get("sales_counts_changed", 0)),
            *((f"seconds: {stage}", f"{secs:.2f}") for stage, secs in _in_stage_order(stats.get("seconds", {}))),
            ("seconds: total", f"{stats.get('seconds_total', 0):.2f}"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [_("Precompute run #%(run)s succeeded; set #%(set)s is active.") % {"run": run_id, "set": set_id}, ""]
        lines += [f"warning: {warning}" for warning in stats.get("warnings", [])]
        lines += [""] if stats.get("warnings") else []
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)
