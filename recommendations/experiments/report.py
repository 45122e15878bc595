"""How the arms of an experiment compare: the per-shopper statistics and the report the admin shows.

Statistics (docs/architecture.md, "Experiments"): the unit of analysis is the shopper, because shoppers are what the
hash randomises; blocks of one shopper are not independent trials. Per arm, the click rate = shoppers who clicked /
shoppers shown the arm and the conversion = shoppers with an attributed order / shoppers shown the arm, each with a
Wilson 95 % interval; per arm against the control (the first variant), the absolute difference of those rates with a
Wald (unpooled normal approximation) 95 % interval, which decides significance, and the relative lift with a
delta-method 95 % interval. Clicks per block (CTR), orders and revenue per shopper are descriptive figures only.

Those normal intervals mean nothing on a handful of shoppers (3 against 3, nobody clicking, gives "0.00 % to 0.00 %"),
so a comparison is only read once it has enough data: MIN_SHOPPERS_PER_ARM shoppers in each of the two arms and, over
both together, MIN_OUTCOMES successes and MIN_OUTCOMES failures (the usual rule of thumb for the normal
approximation). Until then the report says "not enough data", nothing is significant and no arm is called the winner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from statistics import NormalDist
from typing import Any

from django.db.models import Count, Q, Sum

from recommendations.analytics import order_key
from recommendations.experiments.assignment import stamp_of
from recommendations.models import Event, Experiment

CONFIDENCE = 0.95


Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)  # 1.959963984540054


MIN_SHOPPERS_PER_ARM = 30  # per arm, before a comparison with the control is read at all


MIN_OUTCOMES = 5  # successes and failures each, over both arms of a comparison


def wilson(successes: int, trials: int) -> tuple[float, float] | None:
    """The Wilson 95 % interval of one rate (sound at 0 and at small counts); None without trials."""
    if trials <= 0:
        return None
    p = min(max(successes / trials, 0.0), 1.0)
    denominator = 1 + Z**2 / trials
    centre = (p + Z**2 / (2 * trials)) / denominator
    half = Z * math.sqrt(p * (1 - p) / trials + Z**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Comparison:
    """One arm against the control on one rate. Every field is None when either arm has no trials (shoppers)."""

    difference: float | None = None  # rate - control rate, absolute
    low: float | None = None  # its 95 % interval (Wald, unpooled)
    high: float | None = None
    lift: float | None = None  # rate / control rate - 1; None when the control's rate is 0
    lift_low: float | None = None  # its 95 % interval (delta method); None when either rate is 0
    lift_high: float | None = None
    p_value: float | None = None  # two-sided, from the same standard error; None when it is 0

    @property
    def significant(self) -> bool:
        """Whether the 95 % interval of the difference leaves out 0."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def compare(control_successes: int, control_trials: int, successes: int, trials: int) -> Comparison:
    """The difference between two rates and the relative lift, with 95 % intervals from the normal approximation.

    Rates outside [0, 1] (impossible for the report's per-shopper rates, but callers may pass any counts) are clamped
    in the variances.
    """
    if control_trials <= 0 or trials <= 0:
        return Comparison()
    p_a, p_b = control_successes / control_trials, successes / trials
    q_a, q_b = min(max(p_a, 0.0), 1.0), min(max(p_b, 0.0), 1.0)
    var_a, var_b = q_a * (1 - q_a) / control_trials, q_b * (1 - q_b) / trials
    se = math.sqrt(var_a + var_b)
    difference = p_b - p_a
    p_value = 2 * (1 - NormalDist().cdf(abs(difference) / se)) if se > 0 else None
    lift = lift_low = lift_high = None
    if p_a > 0:
        lift = p_b / p_a - 1
    if p_a > 0 and p_b > 0:
        # Var(p_b / p_a) ~ Var(p_b) / p_a^2 + p_b^2 Var(p_a) / p_a^4 (first-order Taylor expansion of the ratio).
        # At p_b = 0 it would collapse to a zero-width "-100 % to -100 %", which says nothing: no interval then.
        lift_se = math.sqrt(var_b / p_a**2 + p_b**2 * var_a / p_a**4)
        lift_low, lift_high = lift - Z * lift_se, lift + Z * lift_se
    return Comparison(
        difference=difference,
        low=difference - Z * se,
        high=difference + Z * se,
        lift=lift,
        lift_low=lift_low,
        lift_high=lift_high,
        p_value=p_value,
    )


def enough_data(control_successes: int, control_trials: int, successes: int, trials: int) -> bool:
    """Whether a comparison has the data its normal interval needs (see the module docstring); False shows as
    "not enough data" instead of a zero-width or meaningless interval."""
    if min(control_trials, trials) < MIN_SHOPPERS_PER_ARM:
        return False
    total_successes = control_successes + successes
    total_failures = control_trials + trials - total_successes
    return total_successes >= MIN_OUTCOMES and total_failures >= MIN_OUTCOMES


@dataclass
class ArmLine:
    """One arm since the experiment started: event totals (descriptive), the per-shopper counts the statistics use,
    and how the arm compares with the control.

    Shoppers, not blocks, are what bucketing randomises, so a trial is a shopper who was shown the arm; a shopper who
    sees fifty blocks and clicks fifty times is one trial and one success, not fifty.
    """

    variant_id: int
    name: str
    stamp: str
    strategy: str
    training_run_id: int | None
    share: float
    # Event totals, as before: every block, click, attributed add-to-cart, distinct order and its revenue.
    impressions: int = 0
    clicks: int = 0
    add_to_carts: int = 0
    orders: int = 0
    revenue: Decimal = Decimal("0")
    # Per shopper: shown the arm (an impression since the start), and of those, who clicked / ordered, and what
    # the shown shoppers spent in attributed orders.
    shoppers: int = 0
    clickers: int = 0
    buyers: int = 0
    shopper_revenue: Decimal = Decimal("0")
    is_control: bool = False
    click_rate_vs_control: Comparison = field(default_factory=Comparison)
    conversion_vs_control: Comparison = field(default_factory=Comparison)
    # Whether each comparison has enough data to be read (`enough_data`); the control's are False.
    click_enough: bool = False
    conversion_enough: bool = False

    @property
    def clicks_better(self) -> bool:
        """Read and significantly above the control on click rate."""
        c = self.click_rate_vs_control
        return self.click_enough and c.significant and (c.difference or 0) > 0

    @property
    def clicks_worse(self) -> bool:
        c = self.click_rate_vs_control
        return self.click_enough and c.significant and (c.difference or 0) < 0

    @property
    def converts_worse(self) -> bool:
        c = self.conversion_vs_control
        return self.conversion_enough and c.significant and (c.difference or 0) < 0

    @property
    def ctr(self) -> float | None:
        """Clicks per block shown: descriptive only (blocks of one shopper are not independent trials)."""
        return self.clicks / self.impressions if self.impressions else None

    @property
    def click_rate(self) -> float | None:
        """Share of the arm's shoppers who clicked at least once."""
        return self.clickers / self.shoppers if self.shoppers else None

    @property
    def conversion(self) -> float | None:
        """Share of the arm's shoppers with at least one attributed order."""
        return self.buyers / self.shoppers if self.shoppers else None

    @property
    def revenue_per_shopper(self) -> Decimal | None:
        """Attributed revenue of the shoppers shown the arm, over those shoppers (descriptive, no interval)."""
        return (self.shopper_revenue / self.shoppers).quantize(Decimal("0.01")) if self.shoppers else None

    @property
    def click_rate_interval(self) -> tuple[float, float] | None:
        return wilson(self.clickers, self.shoppers)

    @property
    def conversion_interval(self) -> tuple[float, float] | None:
        return wilson(self.buyers, self.shoppers)


@dataclass
class Report:
    experiment_id: int
    since: datetime | None
    arms: list[ArmLine]

    @property
    def winner(self) -> ArmLine | None:
        """The arm the data picks, or None while it picks none (too little data, or no significant difference).

        A challenger wins with a significantly higher click rate than the control and no significantly lower
        conversion (the best such difference if several); the control wins when every challenger is significantly
        worse on click rate. Staff may still promote any arm, but only this one is offered as "the winner".
        """
        challengers = self.arms[1:]
        if not challengers:
            return None
        better = [arm for arm in challengers if arm.clicks_better and not arm.converts_worse]
        if better:
            return max(better, key=lambda arm: arm.click_rate_vs_control.difference or 0.0)
        if all(arm.clicks_worse for arm in challengers):
            return self.arms[0]
        return None


def _arm_aggregates(index: int, stamp: str) -> dict[str, Any]:
    """The outer aggregates of one arm over the per-(arm, shopper) rows `report` groups the events into."""
    arm = Q(variant=stamp)
    shown = arm & Q(shown__gt=0)
    zero = Decimal("0")
    return {
        f"impressions_{index}": Sum("shown", filter=arm, default=0),
        f"clicks_{index}": Sum("clicked", filter=arm, default=0),
        f"add_to_carts_{index}": Sum("carted", filter=arm, default=0),
        f"orders_{index}": Sum("ordered", filter=arm, default=0),
        f"revenue_{index}": Sum("spent", filter=arm, default=zero),
        f"shoppers_{index}": Count("shopper", filter=shown),
        f"clickers_{index}": Count("shopper", filter=shown & Q(clicked__gt=0)),
        f"buyers_{index}": Count("shopper", filter=shown & Q(ordered__gt=0)),
        f"shopper_revenue_{index}": Sum("spent", filter=shown, default=zero),
    }


def report(experiment: Experiment) -> Report:
    """Every arm's counts since the experiment (last) started, read live from the events stamped with it in one query
    (events grouped per arm and shopper, then per arm); then each arm against the control on per-shopper rates.

    Conversions that follow a click made while it ran still count after it stops (they carry the stamp). A shopper
    counts as a trial of an arm only with an impression of it since the start, so clickers and buyers are always a
    subset of the trials (a click stamped before a restart's impressions does not make a rate above 1).
    """
    variants = list(experiment.variants.order_by("pk"))
    total = sum(v.share for v in variants if v.share > 0) or 1.0
    arms = [
        ArmLine(
            variant_id=v.pk,
            name=v.name,
            stamp=stamp_of(experiment.pk, v.name),
            strategy=v.strategy,
            training_run_id=v.training_run_id,
            share=max(v.share, 0.0) / total,
            is_control=i == 0,
        )
        for i, v in enumerate(variants)
    ]
    if experiment.started_at is not None and arms:
        attributed = ~Q(recommendation_id="")
        purchase = Q(event_type="purchase") & attributed
        per_shopper = (
            Event.objects.filter(
                variant__in=[a.stamp for a in arms],
                occurred_at__gte=experiment.started_at,
                event_type__in=("impression", "click", "add_to_cart", "purchase"),
            )
            .values("variant", "shopper")
            .annotate(
                shown=Count("pk", filter=Q(event_type="impression")),
                clicked=Count("pk", filter=Q(event_type="click")),
                carted=Count("pk", filter=Q(event_type="add_to_cart") & attributed),
                # The order key starts with the shopper, so the per-shopper distinct counts add up to the arm's.
                ordered=Count(order_key(), filter=purchase, distinct=True),
                spent=Sum("value", filter=purchase, default=Decimal("0")),
            )
            .order_by()
        )
        aggregates: dict[str, Any] = {}
        for i, arm in enumerate(arms):
            aggregates.update(_arm_aggregates(i, arm.stamp))
        totals = per_shopper.aggregate(**aggregates)
        for i, arm in enumerate(arms):
            for name in ("impressions", "clicks", "add_to_carts", "orders", "shoppers", "clickers", "buyers"):
                setattr(arm, name, int(totals[f"{name}_{i}"] or 0))
            arm.revenue = Decimal(totals[f"revenue_{i}"] or 0)
            arm.shopper_revenue = Decimal(totals[f"shopper_revenue_{i}"] or 0)
    if arms:
        control = arms[0]
        for arm in arms[1:]:
            arm.click_rate_vs_control = compare(control.clickers, control.shoppers, arm.clickers, arm.shoppers)
            arm.conversion_vs_control = compare(control.buyers, control.shoppers, arm.buyers, arm.shoppers)
            arm.click_enough = enough_data(control.clickers, control.shoppers, arm.clickers, arm.shoppers)
            arm.conversion_enough = enough_data(control.buyers, control.shoppers, arm.buyers, arm.shoppers)
    return Report(experiment_id=experiment.pk, since=experiment.started_at, arms=arms)
