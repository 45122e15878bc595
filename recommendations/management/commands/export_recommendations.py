"""`manage.py export_recommendations`: write the active set's precomputed lists as CSV or JSONL, one row per item.

For email campaigns, feeds and checking what the engine would show. Lists are streamed from the database a
chunk at a time, so a set with 100k shoppers never sits in memory.

`--placement` takes any placement the active set holds (for_you, similar, trending, bought_together, buy_again,
an experiment arm's "for_you@run<id>", ...), or "all" (the default). Columns for one placement:
  for_you, for_you@run<id>   user_id,rank,product_id,score,reason     user_id is the user's id, or
                                                                       "visitor:<id>" for an anonymous visitor
  similar, bought_together   anchor_product_id,rank,product_id,score,reason
  trending                   category,rank,product_id,score,reason    category is "" for the shop-wide list
  buy_again                  subject,rank,product_id,score,reason,interval_days   subject is "" (one shared list)
  anything else              subject,rank,product_id,score,reason
With "all", every placement in turn (by name, then subject) under one header:
  placement,subject,rank,product_id,score,reason,interval_days        interval_days empty except for buy_again

Bad input is one line naming the option and the value, and a non-zero exit (CommandError).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from tqdm import tqdm

from recommendations import serving
from recommendations.keys import base_placement
from recommendations.models import StoredList

ALL = "all"
# Keyed by the placement's base name: an experiment arm's "for_you@run7" is read like "for_you".
SUBJECT_COLUMN = {
    "for_you": "user_id",
    "similar": "anchor_product_id",
    "bought_together": "anchor_product_id",
    "trending": "category",
}
# Values an item carries after its reason, by placement (buy_again stores its repurchase interval there).
EXTRA_COLUMNS = {"buy_again": ("interval_days",)}
ALL_HEADER = ("placement", "subject", "rank", "product_id", "score", "reason", "interval_days")
FORMATS = ("csv", "jsonl")
CHUNK = 2000


def header_for(placement: str) -> tuple[str, ...]:
    """The columns of a one-placement export."""
    subject = SUBJECT_COLUMN.get(base_placement(placement), "subject")
    return (subject, "rank", "product_id", "score", "reason", *EXTRA_COLUMNS.get(base_placement(placement), ()))


def subject_label(placement: str, subject: str) -> str:
    """The subject as the export shows it: no engine prefixes, visitors marked as such."""
    base = base_placement(placement)
    if base == "for_you":
        if subject.startswith("u:"):
            return subject[2:]
        if subject.startswith("v:"):
            return f"visitor:{subject[2:]}"
    if base == "trending" and subject.startswith("category:"):
        return subject[len("category:") :]
    return subject


def export_rows(set_id: int, placement: str, limit: int, progress: Any = None) -> Iterator[tuple[Any, ...]]:
    """(subject, rank, product_id, score, reason, *extras) for the first `limit` items of every list of one
    placement; extras are EXTRA_COLUMNS' values (None where an item lacks one)."""
    n_extra = len(EXTRA_COLUMNS.get(base_placement(placement), ()))
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
            extras = [*rest[1 : 1 + n_extra], *[None] * n_extra][:n_extra]
            yield label, rank, str(product_id), float(score), rest[0] if rest else "", *extras
        if progress is not None:
            progress.update(1)


def export_all_rows(
    set_id: int, placements: Mapping[str, int], limit: int, progress: Any = None
) -> Iterator[tuple[Any, ...]]:
    """ALL_HEADER rows for every placement, one placement after another (each read in subject order by the index)."""
    for placement in sorted(placements):
        for label, rank, product_id, score, reason, *extras in export_rows(set_id, placement, limit, progress):
            interval = extras[0] if base_placement(placement) == "buy_again" and extras else None
            yield placement, label, rank, product_id, score, reason, interval


def parse_limit(raw: Any) -> int:
    """--limit as a whole number of at least 1, or a one-line error quoting what was given."""
    text = str(raw).strip()
    if not text.isdigit() or int(text) < 1:
        raise CommandError(f"--limit must be at least 1 (a whole number), not {text!r}")
    return int(text)


class Command(BaseCommand):
    help = (
        "Export the active recommendation set's lists, one row per subject and rank: one placement the set holds "
        '(--placement for_you, similar, trending, bought_together, buy_again, "for_you@run<id>", ...) or all of '
        "them (the default: placement,subject,rank,product_id,score,reason,interval_days)."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # An argument error (a missing value, an unknown option) is then its own one line, without the usage
        # block in front; --help still prints everything.
        parser.print_usage = lambda file=None: None  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--placement", default=ALL, help='A placement the active set holds, or "all" (the default).'
        )
        parser.add_argument("--limit", default="10", help="Items per list (default 10).")
        parser.add_argument("--format", default="csv", help="csv (default) or jsonl.")
        parser.add_argument("--output", help="File to write; standard output when left out.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        placement, fmt = options["placement"], options["format"]
        if fmt not in FORMATS:
            raise CommandError(f"--format: unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
        limit = parse_limit(options["limit"])
        serving.forget_active_set()  # a command should see the set that is active now, not a cached id
        set_id = serving.active_set_id()
        if set_id is None:
            raise CommandError("there is no active recommendation set; run precompute_recommendations first.")
        # One aggregate: which placements the set holds (to check --placement) and how many lists (for progress).
        held = dict(
            StoredList.objects.filter(recommendation_set_id=set_id)
            .values_list("placement")
            .annotate(n=Count("pk"))
            .order_by()
        )
        if placement != ALL and placement not in held:
            holds = ", ".join(sorted(held)) or "no lists"
            raise CommandError(
                f"--placement: unknown placement {placement!r} in the active set #{set_id}; "
                f'it holds: {holds} (or use "all")'
            )
        chosen = held if placement == ALL else {placement: held[placement]}
        total = sum(chosen.values())

        header = ALL_HEADER if placement == ALL else header_for(placement)
        written = 0
        with ExitStack() as stack:
            out: IO[str] | Any
            if options["output"]:
                try:
                    out = stack.enter_context(open(options["output"], "w", encoding="utf-8", newline=""))
                except OSError as exc:
                    raise CommandError(f"--output: cannot write {options['output']}: {exc.strerror or exc}") from None
            else:
                out = self.stdout
            bar = stack.enter_context(
                tqdm(total=total, desc="lists", unit=" lists", file=sys.stderr, disable=options["no_progress"])
            )
            if placement == ALL:
                rows = export_all_rows(set_id, chosen, limit, bar)
            else:
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
        if placement == ALL:
            what = _("%(lists)s lists (%(placements)s placements)") % {"lists": total, "placements": len(chosen)}
        else:
            what = _("%(lists)s %(placement)s lists") % {"lists": total, "placement": placement}
        summary = ngettext(
            "Exported %(rows)s row from %(what)s of set #%(set)s",
            "Exported %(rows)s rows from %(what)s of set #%(set)s",
            written,
        ) % {"rows": written, "what": what, "set": set_id}
        if options["output"]:
            self.stdout.write(_("%(summary)s to %(file)s.") % {"summary": summary, "file": options["output"]})
        else:
            self.stderr.write(f"{summary}.")
