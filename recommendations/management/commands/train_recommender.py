"""`manage.py train_recommender`: retrain now in this process, with a bar per stage and the candidate table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from recommendations.engine.candidates import CANDIDATE_SPECS
from recommendations.management.stage_bars import StageBars
from recommendations.models import TrainingRun
from recommendations.training.runs import TrainingError, choice_lines, run_training, split_line, warning_lines

METRICS = ("ndcg", "recall", "hr", "mrr", "coverage", "cold_recall")


class Command(BaseCommand):
    help = "Fit every candidate on a temporal split, pick the best by validation NDCG@10, gate it and register it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--candidates",
            help=f"Comma-separated candidates instead of the CANDIDATES setting ({', '.join(CANDIDATE_SPECS)}).",
        )
        parser.add_argument("--no-progress", action="store_true", help="Do not draw progress bars.")

    def handle(self, *args: Any, **options: Any) -> None:
        candidates = None
        if options["candidates"]:
            candidates = [c.strip() for c in options["candidates"].split(",") if c.strip()]
            unknown = [c for c in candidates if c not in CANDIDATE_SPECS]
            if unknown:
                raise CommandError(f"--candidates: unknown {', '.join(unknown)} (known: {', '.join(CANDIDATE_SPECS)})")
        bars = StageBars(enabled=not options["no_progress"])
        try:
            run = run_training(on_progress=bars, candidates=candidates)
        except TrainingError as exc:
            bars.close()
            raise CommandError(f"training failed: {exc}") from exc
        except Exception as exc:
            bars.close()
            raise CommandError(f"training failed: {type(exc).__name__}: {exc}") from exc
        bars.close()
        if run.status == TrainingRun.Status.SKIPPED:
            raise CommandError(run.message)
        self.stdout.write(self.report(run))

    @staticmethod
    def report(run: TrainingRun) -> str:
        """The candidate table (validation and test metrics side by side) and the gate's verdict."""
        header = ["candidate", *(f"val {m}" for m in METRICS), "test ndcg", "fit s"]
        rows = []
        ordered = sorted(run.candidates.items(), key=lambda kv: -(kv[1].get("validation") or {}).get("ndcg", -1))
        for name, result in ordered:
            val, test = result.get("validation") or {}, result.get("test") or {}
            if not val:
                skipped = (result.get("fit") or {}).get("skipped")
                note = f"skipped: {skipped}" if skipped else result.get("note", "")
                rows.append([name + (" *" if name == run.chosen else ""), *(["-"] * len(METRICS)), "-", note])
                continue
            mark = " *" if name == run.chosen else ""
            rows.append(
                [
                    name + mark,
                    *(f"{val.get(m, 0):.4f}" for m in METRICS),
                    f"{test.get('ndcg', 0):.4f}" if test else "-",
                    f"{result.get('seconds', 0):.1f}" if "seconds" in result else "-",
                ]
            )
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = [_("Training run #%(pk)s: %(status)s") % {"pk": run.pk, "status": run.get_status_display()}, ""]
        # The last column is padded to the longest note (a skipped candidate's reason): no trailing spaces.
        lines.append("  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True)).rstrip())
        lines += ["  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        stats = run.data_stats or {}
        lines += [
            "",
            f"* chosen: {run.chosen}   test: "
            + ", ".join(f"{m} {run.test_metrics.get(m, 0):.4f}" for m in METRICS if m in run.test_metrics),
            f"data: {stats.get('events', 0)} events, {stats.get('shoppers', 0)} shoppers, "
            f"{stats.get('products', 0)} products; cleaning {stats.get('cleaning', {})}",
            f"split: {split_line(stats)}",
            *(f"choice: {line}" for line in choice_lines(stats)),
            *(f"warning: {line}" for line in warning_lines(stats)),
            f"gate: {run.gate.get('reason', '')}",
            f"model: {run.artefact_path} (sha256 {run.artefact_sha256[:16]})",
            "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in run.stage_seconds.items()),
            run.message,
        ]
        return "\n".join(lines)
