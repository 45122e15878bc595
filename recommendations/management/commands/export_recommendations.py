"""`manage.py export_recommendations`: write the active set's precomputed lists as CSV or JSONL, one row per item.

For email campaigns, feeds and checking what the engine would show. Lists are streamed from the database a
chunk at a time, so a set with 100k shoppers never sits in memory.

Columns per placement:
  for_you   user_id,rank,product_id,score,reason            user_id is the user's id, or "visitor:<id>" for
                                                             an anonymous visitor
  similar   anchor_product_id,rank,product_id,score,reason
  trending  category,rank,product_id,score,reason           category is "" for the shop-wide list
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from recommendations import serving
from recommendations.models import StoredList

SUBJECT_COLUMN = {"for_you": "user_id", "similar": "anchor_product_id", "trending": "category"}
FORMATS = ("csv", "jsonl")
CHUNK = 2000


def subject_label(placement: str, subject: str) -> str:
    """The subject as the export shows it: no engine prefixes, visitors marked as such."""
    if placement == "for_you":
        if subject.startswith("u:"):
            return subject[2:]
        if subject.startswith("v:"):
            return f"visitor:{subject[2:]}"
    if placement == "trending" and subject.startswith("category:"):
        return subject[len("category:") :]
    return subject


def export_rows(set_id: int, placement: str, limit: int, progress: Any = None) -> Iterator[tuple[Any, ...]]:
    """(subject, rank, product_id, score, reason) for the first `limit` items of every list of one placement."""
    lists = (
        StoredList.objects.filter(recommendation_set_id=set_id, placement=placement)
        .order_by("subject")
        .values_list("subject", "items")
        .iterator(chunk_size=CHUNK)
    )
    for subject, items in lists:
        label = subject_label(placement, subject)
        for rank, item in enumerate(items[:limit], start=1):
            product_id, score, *rest = item
            yield label, rank, str(product_id), float(score), rest[0] if rest else ""
        if progress is not None:
            progress.update(1)


class Command(BaseCommand):
    help = (
        "Export the active recommendation set's lists for one placement, one row per subject and rank. "
        'for_you: user_id ("visitor:<id>" for visitors),rank,product_id,score,reason; '
        "similar: anchor_product_id,...; trending: category (empty for shop-wide),..."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--placement", required=True, help="for_you, similar or trending.")
        parser.add_argument("--limit", type=int, default=10, help="Items per list (default 10).")
        parser.add_argument("--format", default="csv", help="csv (default) or jsonl.")
        parser.add_argument("--output", help="File to write; standard output when left out.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        placement, fmt, limit = options["placement"], options["format"], options["limit"]
        if placement not in SUBJECT_COLUMN:
            raise CommandError(f"unknown placement {placement!r}; use one of: {', '.join(SUBJECT_COLUMN)}")
        if fmt not in FORMATS:
            raise CommandError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
        if limit < 1:
            raise CommandError(f"--limit must be at least 1, not {limit}")
        serving.forget_active_set()  # a command should see the set that is active now, not a cached id
        set_id = serving.active_set_id()
        if set_id is None:
            raise CommandError("there is no active recommendation set; run precompute_recommendations first.")
        total = StoredList.objects.filter(recommendation_set_id=set_id, placement=placement).count()

        header = (SUBJECT_COLUMN[placement], "rank", "product_id", "score", "reason")
        written = 0
        with ExitStack() as stack:
            out: IO[str] | Any
            if options["output"]:
                try:
                    out = stack.enter_context(open(options["output"], "w", encoding="utf-8", newline=""))
                except OSError as exc:
                    raise CommandError(f"cannot write {options['output']}: {exc.strerror or exc}") from None
            else:
                out = self.stdout
            bar = stack.enter_context(
                tqdm(total=total, desc="lists", unit=" lists", file=sys.stderr, disable=options["no_progress"])
            )
            rows = export_rows(set_id, placement, limit, bar)
            if fmt == "csv":
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(header)
                for row in rows:
                    writer.writerow(row)
                    written += 1
            else:
                for row in rows:
                    out.write(json.dumps(dict(zip(header, row, strict=True))) + "\n")
                    written += 1
        summary = f"Exported {written} rows from {total} {placement} lists of set #{set_id}"
        if options["output"]:
            self.stdout.write(f"{summary} to {options['output']}.")
        else:
            self.stderr.write(f"{summary}.")
