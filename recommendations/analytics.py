"""Daily analytics per placement: events rolled up into PlacementDay rows, and the reads the admin charts and exports.

A day is a calendar day in the site's TIME_ZONE (Django's default time zone), because that is the day staff think
in when they read "yesterday"; the demo runs in UTC. An event belongs to the day of its `occurred_at`.

Per (day, placement, variant):
- impressions: blocks rendered (one impression event per block); items_shown: the items in them; exploration_items:
  items whose source is "exploration" (new products given a slot to gather feedback).
- clicks: click events with a placement.
- add_to_carts and orders/revenue: add-to-cart and purchase events attributed to a block (a recommendation id, see
  tracking.attribute), counted under the block's placement. Orders are distinct (shopper, order id); a purchase
  with no order id (imported history) counts as an order of its own. Revenue is the sum of their values.
CTR is clicks per rendered block.

The rollup is one grouped query over the range's events (the JSON parts computed by the database on PostgreSQL and
SQLite), written in one transaction that replaces the range's rows, so a rebuild is idempotent.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    Case,
    CharField,
    Count,
    Func,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Concat, NullIf, TruncDate
from django.db.models.lookups import IsNull
from django.utils import timezone
from django.utils.translation import gettext as _

from recommendations import retention
from recommendations.models import Event, PlacementDay

EXPLORATION = "exploration"  # the source serving gives an item shown to gather feedback on a new product
MAX_RANGE_DAYS = 366  # the admin's filter and refresh; the command may rebuild more, a day at a time
DEFAULT_RANGE_DAYS = 30
MIN_DAY, MAX_DAY = date(1970, 1, 1), date(9999, 12, 30)
# Any 64-bit id: serialises concurrent rebuilds (the hourly task and a "Refresh now") on PostgreSQL, so one never
# inserts rows the other is about to insert.
LOCK_KEY = 0x72656361  # "reca"

COUNTED_TYPES = ("impression", "click", "add_to_cart", "purchase")


class ItemsShown(Func):
    """len(context["items"]) of an event, 0 when it is missing or not a list."""

    arity = 1
    output_field = IntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        template = (
            "(CASE WHEN jsonb_typeof(%(expressions)s -> 'items') = 'array' "
            "THEN jsonb_array_length(%(expressions)s -> 'items') ELSE 0 END)"
        )
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        template = (
            "(CASE WHEN json_type(%(expressions)s, '$.items') = 'array' "
            "THEN json_array_length(%(expressions)s, '$.items') ELSE 0 END)"
        )
        return self.as_sql(compiler, connection, template=template, **extra)


class ExplorationItems(Func):
    """How many entries of context["sources"] are "exploration"; 0 when it is missing or not a list."""

    arity = 1
    output_field = IntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        template = (
            "(SELECT count(*) FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(%(expressions)s -> 'sources') "
            "= 'array' THEN %(expressions)s -> 'sources' ELSE '[]'::jsonb END) AS rec_source(v) "
            "WHERE rec_source.v = 'exploration')"  # EXPLORATION
        )
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        template = (
            "(SELECT count(*) FROM json_each(%(expressions)s, '$.sources') AS rec_source WHERE "
            "rec_source.value = 'exploration'"  # EXPLORATION
            " AND json_type(%(expressions)s, '$.sources') = 'array')"
        )
        return self.as_sql(compiler, connection, template=template, **extra)


def json_counts_in_database() -> bool:
    """Whether this database computes the item counts itself (elsewhere they are summed in Python)."""
    return connection.vendor in ("postgresql", "sqlite")


def day_bounds(start: date, end: date, tz: tzinfo | None = None) -> tuple[datetime, datetime]:
    """[first instant of `start`, first instant after `end`) in the site's time zone."""
    tz = tz or timezone.get_default_timezone()
    return (
        datetime.combine(start, time.min).replace(tzinfo=tz),
        datetime.combine(end + timedelta(days=1), time.min).replace(tzinfo=tz),
    )


def _events(start: date, end: date) -> QuerySet:
    since, until = day_bounds(start, end)
    return Event.objects.filter(occurred_at__gte=since, occurred_at__lt=until, event_type__in=COUNTED_TYPES).exclude(
        placement=""
    )


def order_key() -> Case:
    """One key per order, so an order of three recommended products counts once: (shopper, order id), or the event
    itself for a purchase without an order id. The placement, experiment and e-mail reports all count orders so."""
    order_id = NullIf(Cast(KeyTextTransform("order_id", "context"), CharField()), Value(""))
    return Case(
        When(IsNull(order_id, False), then=Concat("shopper", Value("|"), order_id, output_field=CharField())),
        default=Concat(Value("event|"), "event_id", output_field=CharField()),
        output_field=CharField(),
    )


def _rollup(start: date, end: date, *, items_in_database: bool) -> dict[tuple[date, str, str], dict[str, Any]]:
    """One grouped query: every counter of every (day, placement, variant) in the range."""
    tz = timezone.get_default_timezone()
    impression = Q(event_type="impression")
    attributed = ~Q(recommendation_id="")
    purchase = Q(event_type="purchase") & attributed
    measures: dict[str, Any] = {
        "impressions": Count("pk", filter=impression),
        "clicks": Count("pk", filter=Q(event_type="click")),
        "add_to_carts": Count("pk", filter=Q(event_type="add_to_cart") & attributed),
        "orders": Count(order_key(), filter=purchase, distinct=True),
        "revenue": Sum("value", filter=purchase, default=Decimal("0")),
    }
    if items_in_database:
        measures["items_shown"] = Sum(ItemsShown("context"), filter=impression, default=0)
        measures["exploration_items"] = Sum(ExplorationItems("context"), filter=impression, default=0)
    rows = (
        _events(start, end)
        .annotate(day=TruncDate("occurred_at", tzinfo=tz))
        .values("day", "placement", "variant")
        .annotate(**measures)
        .order_by()
    )
    out: dict[tuple[date, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row.pop("day"), row.pop("placement"), row.pop("variant"))
        out[key] = {
            name: (Decimal(value or 0) if name == "revenue" else int(value or 0)) for name, value in row.items()
        }
        if not items_in_database:
            out[key].update(items_shown=0, exploration_items=0)
    if not items_in_database:
        for key, (items, exploring) in _item_counts_in_python(start, end).items():
            out.setdefault(key, {}).update(items_shown=items, exploration_items=exploring)
    return out


def _item_counts_in_python(start: date, end: date) -> dict[tuple[date, str, str], tuple[int, int]]:
    """The JSON counts for databases without JSON array functions: read the impressions' contexts, a row at a time."""
    tz = timezone.get_default_timezone()
    counts: dict[tuple[date, str, str], tuple[int, int]] = {}
    rows = (
        _events(start, end)
        .filter(event_type="impression")
        .values_list("occurred_at", "placement", "variant", "context")
    )
    for occurred_at, placement, variant, context in rows.iterator(chunk_size=2000):
        context = context if isinstance(context, dict) else {}
        items, sources = context.get("items"), context.get("sources")
        key = (timezone.localtime(occurred_at, tz).date(), placement, variant)
        shown, exploring = counts.get(key, (0, 0))
        counts[key] = (
            shown + (len(items) if isinstance(items, list) else 0),
            exploring + (sources.count(EXPLORATION) if isinstance(sources, list) else 0),
        )
    return counts


def rebuild_days(start: date, end: date, *, items_in_database: bool | None = None) -> int:
    """Recompute the PlacementDay rows of days `start`..`end` (inclusive) from the events; returns the rows written.

    The range's old rows are replaced in one transaction, so readers see the old numbers or the new, and running it
    twice writes the same rows. `items_in_database` forces where the JSON counts are made (tests compare the two).
    """
    if end < start:
        raise ValueError(f"the range ends ({end}) before it starts ({start})")
    if items_in_database is None:
        items_in_database = json_counts_in_database()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        rows = _rollup(start, end, items_in_database=items_in_database)
        kept = _days_kept_from_before_retention(start, end)
        if kept:
            rows = {key: counts for key, counts in rows.items() if key[0] not in kept}
        PlacementDay.objects.filter(day__gte=start, day__lte=end).exclude(day__in=kept).delete()
        PlacementDay.objects.bulk_create(
            PlacementDay(day=day, placement=placement, variant=variant, **counts)
            for (day, placement, variant), counts in sorted(rows.items())
        )
    return len(rows)


def _days_kept_from_before_retention(start: date, end: date) -> set[date]:
    """Days in the range that retention may have thinned and that already have rows: those rows keep the counts
    made while the days were whole (a rebuild from what is left would turn them into zeros). A day before the
    retention cut-off without rows (history imported just now) is built from the events there are."""
    kept_from = retention.first_whole_day()
    if kept_from is None or start >= kept_from:
        return set()
    last = min(end, kept_from - timedelta(days=1))
    return set(PlacementDay.objects.filter(day__gte=start, day__lte=last).values_list("day", flat=True))


def local_today() -> date:
    return timezone.localdate(timezone=timezone.get_default_timezone())


def rebuild_recent(start: str | None = None, end: str | None = None) -> int:
    """The task's entry point: ISO dates in (JSON-friendly), yesterday and today when left out."""
    today = local_today()
    first = date.fromisoformat(start) if start else today - timedelta(days=1)
    last = date.fromisoformat(end) if end else today
    return rebuild_days(first, last)


# ---- reads for the admin ------------------------------------------------------------------------------------------


class PeriodError(ValueError):
    """A date filter staff typed that cannot be used; the message says why, in a sentence."""


def parse_day(value: str, name: str) -> date:
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise PeriodError(
            _("“%(value)s” is not a date for “%(name)s”: use YYYY-MM-DD.") % {"value": value, "name": name}
        ) from None
    if not MIN_DAY <= day <= MAX_DAY:
        raise PeriodError(
            _("“%(name)s” must be between %(first)s and %(last)s.") % {"name": name, "first": MIN_DAY, "last": MAX_DAY}
        )
    return day


def parse_period(params: Mapping[str, str], today: date | None = None) -> tuple[date, date]:
    """The (from, to) days of a request's GET or POST, inclusive; the last DEFAULT_RANGE_DAYS days by default."""
    today = today or local_today()
    raw_to, raw_from = (params.get("to") or "").strip(), (params.get("from") or "").strip()
    end = parse_day(raw_to, "to") if raw_to else today
    start = parse_day(raw_from, "from") if raw_from else max(MIN_DAY, end - timedelta(days=DEFAULT_RANGE_DAYS - 1))
    if start > end:
        raise PeriodError(_("“from” (%(start)s) is after “to” (%(end)s).") % {"start": start, "end": end})
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise PeriodError(
            _("Choose at most %(most)s days; %(start)s to %(end)s is %(days)s.")
            % {"most": MAX_RANGE_DAYS, "start": start, "end": end, "days": (end - start).days + 1}
        )
    return start, end


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


SUMMED = ("impressions", "items_shown", "exploration_items", "clicks", "add_to_carts", "orders", "revenue")


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


@dataclass
class Totals:
    """One line of the totals table: a placement's sums over the period, with the rates derived from them."""

    placement: str
    impressions: int = 0
    items_shown: int = 0
    exploration_items: int = 0
    clicks: int = 0
    add_to_carts: int = 0
    orders: int = 0
    revenue: Decimal = Decimal("0")

    @property
    def ctr(self) -> float | None:
        return ratio(self.clicks, self.impressions)

    @property
    def exploration_share(self) -> float | None:
        return ratio(self.exploration_items, self.items_shown)

    def add(self, other: Totals) -> None:
        for name in SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def placement_days(start: date, end: date, placement: str = "") -> QuerySet:
    rows = PlacementDay.objects.filter(day__gte=start, day__lte=end)
    return rows.filter(placement=placement) if placement else rows


def totals(start: date, end: date, placement: str = "") -> tuple[list[Totals], Totals]:
    """Per placement (all variants together) over the period, and the grand total."""
    rows = (
        placement_days(start, end, placement)
        .values("placement")
        .annotate(**{name: Sum(name) for name in SUMMED})
        .order_by("placement")
    )
    per_placement = [Totals(**row) for row in rows]
    grand = Totals(placement=_("All placements"))
    for line in per_placement:
        grand.add(line)
    return per_placement, grand


def daily(start: date, end: date, placement: str = "") -> dict[str, dict[date, Totals]]:
    """{placement: {day: sums over variants}} for the charts; days without rows are absent."""
    rows = (
        placement_days(start, end, placement)
        .values("day", "placement")
        .annotate(**{name: Sum(name) for name in SUMMED})
        .order_by("placement", "day")
    )
    out: dict[str, dict[date, Totals]] = {}
    for row in rows:
        day = row.pop("day")
        out.setdefault(row["placement"], {})[day] = Totals(**row)
    return out


def known_placements() -> list[str]:
    """Every placement the filter offers: those with analytics rows and those configured."""
    from recommendations.conf import rec_settings
    from recommendations.models import Placement

    names = set(PlacementDay.objects.values_list("placement", flat=True).distinct())
    names |= set(Placement.objects.values_list("name", flat=True))
    names |= set(rec_settings.PLACEMENTS)
    return sorted(names)


# ---- CSV -----------------------------------------------------------------------------------------------------------

CSV_HEADER = (
    "day",
    "placement",
    "variant",
    "impressions",
    "clicks",
    "ctr",
    "add_to_carts",
    "orders",
    "revenue",
    "items_shown",
    "exploration_items",
    "exploration_share",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> str:
    """A cell a spreadsheet will not run: text starting like a formula gets a leading apostrophe (OWASP advice)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def csv_rows(start: date, end: date, placement: str = "") -> Iterator[list[str]]:
    """The header, then one row per day, placement and variant (oldest day first), every cell formula-safe."""
    yield list(CSV_HEADER)
    rows = placement_days(start, end, placement).order_by("day", "placement", "variant")
    for row in rows.iterator(chunk_size=2000):
        cells: list[Any] = [
            row.day.isoformat(),
            row.placement,
            row.variant,
            row.impressions,
            row.clicks,
            _rate(ratio(row.clicks, row.impressions)),
            row.add_to_carts,
            row.orders,
            f"{row.revenue:.2f}",
            row.items_shown,
            row.exploration_items,
            _rate(ratio(row.exploration_items, row.items_shown)),
        ]
        yield [csv_safe(cell) for cell in cells]


def csv_lines(rows: Iterator[list[str]]) -> Iterator[str]:
    """Each row as one CSV line, for a streaming response."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
