"""Analytics per flow and day, for the flow's page in the admin and its CSV: what the sender did, what the e-mails
earned, who left, and how the arms of the flow's experiment compare.

- sent, skipped by cap, skipped weak, held out, failed: Message rows by the day they were written (the run's time),
  in the site's time zone like the placements' analytics (`recommendations.analytics`).
- clicks, add to carts, orders, revenue: the PlacementDay roll-up of the flow's placement `email:<slug>` (summed over
  variants), so they are the placements' page's numbers exactly, as fresh as its last rebuild (hourly).
  Click rate is clicks per e-mail sent.
- unsubscribes: Unsubscribe rows (one-click, or the preference page) of e-mails of this flow.

Per arm (`arms`): the flow's shoppers an experiment on email:<slug> reached (sent, or held out: composed and then not
sent), who clicked, attributed orders and revenue, and who bought anything within ATTRIBUTION_HOURS of their e-mail,
attributed or not: the one measure a hold-out arm (no e-mail, so no click to attribute to) has too, hence the lift.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import CharField, Count, Exists, IntegerField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Concat, TruncDate
from django.utils import timezone

from recommendations.analytics import csv_safe, day_bounds, order_key, ratio
from recommendations.conf import rec_settings
from recommendations.experiments.assignment import stamp_of
from recommendations.experiments.report import Comparison, compare, enough_data, wilson
from recommendations.models import Event, Experiment, ExperimentVariant, Flow, Message, PlacementDay, Unsubscribe

STATUSES = {
    "sent": Message.Status.SENT,
    "skipped_cap": Message.Status.SKIPPED_CAP,
    "skipped_weak": Message.Status.SKIPPED_WEAK,
    "held_out": Message.Status.SKIPPED_HOLDOUT,
    "failed": Message.Status.FAILED,
}
EARNED = ("clicks", "add_to_carts", "orders", "revenue")


@dataclass
class FlowCounts:
    """One flow's counts over a day or a period, with the rate derived from them."""

    sent: int = 0
    skipped_cap: int = 0
    skipped_weak: int = 0
    held_out: int = 0
    failed: int = 0
    clicks: int = 0
    add_to_carts: int = 0
    orders: int = 0
    revenue: Decimal = Decimal("0")
    unsubscribes_one_click: int = 0
    unsubscribes_page: int = 0

    @property
    def unsubscribes(self) -> int:
        return self.unsubscribes_one_click + self.unsubscribes_page

    @property
    def click_rate(self) -> float | None:
        """Clicks per e-mail sent (a shopper clicking two products counts twice, as on a page's block)."""
        return ratio(self.clicks, self.sent)

    def add(self, other: FlowCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def flow_days(flow: Flow, start: date, end: date) -> dict[date, FlowCounts]:
    """{day: counts} of days `start`..`end` (inclusive) that have any; three grouped queries."""
    tz = timezone.get_default_timezone()
    since, until = day_bounds(start, end, tz)
    days: dict[date, FlowCounts] = {}
    messages = (
        Message.objects.filter(flow=flow, created_at__gte=since, created_at__lt=until)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(**{name: Count("pk", filter=Q(status=status)) for name, status in STATUSES.items()})
        .order_by()
    )
    for row in messages:
        day = row.pop("day")
        days[day] = FlowCounts(**row)
    earned = (
        PlacementDay.objects.filter(placement=flow.event_placement, day__gte=start, day__lte=end)
        .values("day")
        .annotate(**{name: Sum(name) for name in EARNED})
        .order_by()
    )
    for row in earned:
        counts = days.setdefault(row.pop("day"), FlowCounts())
        for name in EARNED:
            setattr(counts, name, Decimal(row[name] or 0) if name == "revenue" else int(row[name] or 0))
    left = (
        Unsubscribe.objects.filter(flow=flow, created_at__gte=since, created_at__lt=until)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(
            one_click=Count("pk", filter=Q(kind=Unsubscribe.Kind.ONE_CLICK)),
            page=Count("pk", filter=~Q(kind=Unsubscribe.Kind.ONE_CLICK)),
        )
        .order_by()
    )
    for row in left:
        counts = days.setdefault(row["day"], FlowCounts())
        counts.unsubscribes_one_click, counts.unsubscribes_page = row["one_click"], row["page"]
    return days


def totals(days: dict[date, FlowCounts]) -> FlowCounts:
    total = FlowCounts()
    for counts in days.values():
        total.add(counts)
    return total


def recent_annotations(days: int = 7, today: date | None = None) -> dict[str, Any]:
    """Annotations of a Flow queryset: clicks and orders of its placement in the last `days` days (today included),
    from the roll-up, for the flows list (sortable)."""
    today = today or timezone.localdate(timezone=timezone.get_default_timezone())

    def summed(measure: str) -> Coalesce:
        rows = (
            PlacementDay.objects.filter(
                placement=Concat(Value("email:"), OuterRef("slug"), output_field=CharField()),
                day__gt=today - timedelta(days=days),
            )
            .values("placement")
            .annotate(total=Sum(measure))
            .values("total")
        )
        return Coalesce(Subquery(rows, output_field=IntegerField()), 0)

    return {"recent_clicks": summed("clicks"), "recent_orders": summed("orders")}


# ---- CSV -----------------------------------------------------------------------------------------------------------

CSV_HEADER = (
    "day",
    "flow",
    "sent",
    "skipped_cap",
    "skipped_weak",
    "held_out",
    "failed",
    "clicks",
    "click_rate",
    "add_to_carts",
    "orders",
    "revenue",
    "unsubscribes",
    "unsubscribes_one_click",
    "unsubscribes_page",
)


def csv_rows(flow: Flow, start: date, end: date) -> Iterator[list[str]]:
    """The header, then one row per day of the range (oldest first, days without anything too), formula-safe."""
    yield list(CSV_HEADER)
    days = flow_days(flow, start, end)
    day = start
    while day <= end:
        c = days.get(day) or FlowCounts()
        rate = c.click_rate
        cells: list[Any] = [
            day.isoformat(),
            flow.slug,
            c.sent,
            c.skipped_cap,
            c.skipped_weak,
            c.held_out,
            c.failed,
            c.clicks,
            "" if rate is None else f"{rate:.6f}",
            c.add_to_carts,
            c.orders,
            f"{c.revenue:.2f}",
            c.unsubscribes,
            c.unsubscribes_one_click,
            c.unsubscribes_page,
        ]
        yield [csv_safe(cell) for cell in cells]
        day += timedelta(days=1)


# ---- the flow's experiment -----------------------------------------------------------------------------------------


@dataclass
class ArmCounts:
    """One arm of the experiment on a flow: per shopper, since the experiment (last) started."""

    name: str
    strategy: str
    stamp: str
    shoppers: int = 0  # reached: e-mailed or held out
    sent: int = 0
    clickers: int = 0
    orders: int = 0  # attributed to the flow's e-mails
    revenue: Decimal = Decimal("0")
    buyers: int = 0  # bought anything within ATTRIBUTION_HOURS of their e-mail (or its hold-out)
    is_baseline: bool = False
    vs_baseline: Comparison = field(default_factory=Comparison)
    enough: bool = False

    @property
    def holdout(self) -> bool:
        return self.strategy == ExperimentVariant.Strategy.HOLDOUT

    @property
    def purchase_rate(self) -> float | None:
        return ratio(self.buyers, self.shoppers)

    @property
    def purchase_interval(self) -> tuple[float, float] | None:
        return wilson(self.buyers, self.shoppers)


def flow_experiment(flow: Flow) -> Experiment | None:
    """The experiment on the flow's placement to show: the running one, else the one started last."""
    started = Experiment.objects.filter(placement=flow.event_placement, started_at__isnull=False)
    running = started.filter(status=Experiment.Status.RUNNING).first()
    return running or started.order_by("-started_at", "-pk").first()


def arms(experiment: Experiment) -> list[ArmCounts]:
    """Every arm's counts; the baseline is the hold-out arm when there is one (lift over sending nothing), else the
    first arm (the control), and each other arm's purchase rate is compared with it (report.compare)."""
    variants = list(experiment.variants.order_by("pk"))
    lines = [ArmCounts(v.name, v.strategy, stamp_of(experiment.pk, v.name)) for v in variants]
    if not lines or experiment.started_at is None:
        return lines
    since: datetime = experiment.started_at
    window = timedelta(hours=float(rec_settings.ATTRIBUTION_HOURS))
    stamps = [line.stamp for line in lines]
    bought = Event.objects.filter(
        event_type="purchase",
        user_id=OuterRef("user_id"),
        occurred_at__gte=OuterRef("created_at"),
        occurred_at__lt=OuterRef("created_at") + window,
    )
    reached = (
        Message.objects.filter(
            variant__in=stamps,
            created_at__gte=since,
            status__in=(Message.Status.SENT, Message.Status.SKIPPED_HOLDOUT),
        )
        .annotate(bought=Exists(bought))
        .values("variant")
        .annotate(
            shoppers=Count("user_id", distinct=True),
            sent=Count("pk", filter=Q(status=Message.Status.SENT)),
            buyers=Count("user_id", filter=Q(bought=True), distinct=True),
        )
        .order_by()
    )
    per_stamp = {row["variant"]: row for row in reached}
    events = (
        Event.objects.filter(variant__in=stamps, occurred_at__gte=since, placement=experiment.placement)
        .values("variant")
        .annotate(
            clickers=Count("shopper", filter=Q(event_type="click"), distinct=True),
            orders=Count(order_key(), filter=Q(event_type="purchase") & ~Q(recommendation_id=""), distinct=True),
            revenue=Sum("value", filter=Q(event_type="purchase") & ~Q(recommendation_id=""), default=Decimal("0")),
        )
        .order_by()
    )
    per_stamp_events = {row["variant"]: row for row in events}
    for line in lines:
        row = per_stamp.get(line.stamp, {})
        line.shoppers, line.sent, line.buyers = row.get("shoppers", 0), row.get("sent", 0), row.get("buyers", 0)
        row = per_stamp_events.get(line.stamp, {})
        line.clickers, line.orders = row.get("clickers", 0), row.get("orders", 0)
        line.revenue = Decimal(row.get("revenue") or 0)
    baseline = next((line for line in lines if line.holdout), lines[0])
    baseline.is_baseline = True
    for line in lines:
        if line is not baseline:
            line.vs_baseline = compare(baseline.buyers, baseline.shoppers, line.buyers, line.shoppers)
            line.enough = enough_data(baseline.buyers, baseline.shoppers, line.buyers, line.shoppers)
    return lines
