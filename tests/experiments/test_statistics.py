"""The experiment report counts shoppers, not blocks: shoppers are what the hash randomises, so one shopper's many
blocks, clicks or orders are one trial and one success. Real events through `make_event` (impressions stamped by
serving's rule, clicks and orders stamped by `tracking.attribute`), real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from recommendations.experiments import report as stats
from recommendations.models import Event, Experiment, ExperimentVariant
from tests.factories import make_event, make_user

pytestmark = pytest.mark.django_db


def running(shares=(1, 1)) -> Experiment:
    experiment = Experiment.objects.create(
        name="per shopper",
        placement="for_you",
        status=Experiment.Status.RUNNING,
        salt="b" * 32,
        started_at=timezone.now() - timedelta(days=1),
    )
    for i, share in enumerate(shares):
        ExperimentVariant.objects.create(experiment=experiment, name="AB"[i], share=share)
    return experiment


def show(experiment: Experiment, arm: str, shopper: str, *, click: bool = False, at=None) -> str:
    """One block of `arm` shown to `shopper` (and clicked); returns its recommendation id."""
    rec_id = uuid.uuid4().hex
    at = at or experiment.started_at + timedelta(hours=1)
    fields = {"placement": "for_you", "recommendation_id": rec_id, "product_id": "p1"}
    make_event("impression", shopper, variant=f"{experiment.pk}:{arm}", occurred_at=at, **fields)
    if click:
        make_event("click", shopper, occurred_at=at + timedelta(seconds=5), **fields)
    return rec_id


def one_heavy_shopper_in_b():
    """A: 200 shoppers, one block each, 10 of them click (5 %). B: 200 shoppers alike, 10 clicking, and one shopper
    who was shown 50 blocks and clicked every one."""
    experiment = running()
    for arm in ("A", "B"):
        for i in range(200):
            show(experiment, arm, f"v:{arm.lower()}{i}", click=i < 10)
    for _ in range(50):
        show(experiment, "B", "v:heavy", click=True)
    return experiment


def test_one_heavy_shopper_does_not_make_a_confident_winner():
    experiment = one_heavy_shopper_in_b()
    assert Event.objects.filter(variant=f"{experiment.pk}:B", event_type="click").count() == 60  # stamped by attribute

    control, b = stats.report(experiment).arms

    # The block totals are kept as descriptive figures: 60 clicks in 250 blocks, 24 % against 5 %.
    assert (control.impressions, control.clicks, b.impressions, b.clicks) == (200, 10, 250, 60)
    assert (control.ctr, b.ctr) == (0.05, 0.24)
    # Counted per block that would be a "winner" by a wide margin...
    by_block = stats.compare(control.clicks, control.impressions, b.clicks, b.impressions)
    assert by_block.significant and by_block.low > 0.12
    # ...but it is one shopper: 11 of 201 shoppers clicked in B against 10 of 200 in A.
    assert (control.shoppers, control.clickers, b.shoppers, b.clickers) == (200, 10, 201, 11)
    assert b.click_rate == pytest.approx(11 / 201)
    verdict = b.click_rate_vs_control
    assert verdict.difference == pytest.approx(11 / 201 - 0.05)
    assert not verdict.significant and verdict.low < 0 < verdict.high
    assert verdict.p_value > 0.5
    low, high = b.click_rate_interval
    assert low < 0.05 < high


def test_the_page_decides_on_shoppers(client):
    experiment = one_heavy_shopper_in_b()
    client.force_login(make_user(is_staff=True, is_superuser=True))

    page = client.get(reverse("admin:recommendations_experiment_change", args=[experiment.pk])).content.decode()

    assert "24.00%" in page  # the CTR per block, still shown
    assert "5.47%" in page  # 11 / 201 shoppers clicked
    assert "significant better" not in page and "significant worse" not in page
    assert "A shopper who sees fifty blocks counts once" in page


def test_orders_count_per_shopper_and_revenue_per_shopper():
    experiment = running()
    # A: 4 shoppers; one orders twice (two orders of two lines each).
    for i in range(4):
        show(experiment, "A", f"v:a{i}", click=i == 0)
    for order in ("o-1", "o-2"):
        for line in ("9.00", "1.00"):
            make_event(
                "purchase",
                "v:a0",
                product_id="p1",
                value=Decimal(line),
                context={"order_id": order},
                occurred_at=experiment.started_at + timedelta(hours=2),
            )
    # B: 2 shoppers; both click, one orders once.
    for i in range(2):
        show(experiment, "B", f"v:b{i}", click=True)
    make_event(
        "purchase",
        "v:b1",
        product_id="p1",
        value=Decimal("5.00"),
        context={"order_id": "o-9"},
        occurred_at=experiment.started_at + timedelta(hours=2),
    )
    # Not the arm's: a purchase of a product nobody clicked in a block.
    make_event("purchase", "v:b0", product_id="p2", value=Decimal("99.00"), context={"order_id": "o-10"})

    control, b = stats.report(experiment).arms

    assert (control.orders, control.buyers, control.shoppers, control.revenue) == (2, 1, 4, Decimal("20.00"))
    assert (b.orders, b.buyers, b.shoppers, b.revenue) == (1, 1, 2, Decimal("5.00"))
    assert (control.conversion, b.conversion) == (0.25, 0.5)
    assert (control.revenue_per_shopper, b.revenue_per_shopper) == (Decimal("5.00"), Decimal("2.50"))
    assert b.conversion_vs_control.difference == pytest.approx(0.25)
    assert control.conversion_interval == stats.wilson(1, 4)


def test_a_shopper_counts_as_a_trial_only_when_shown_the_arm_since_the_start():
    experiment = running()
    show(experiment, "A", "v:a0")
    show(experiment, "B", "v:b0")
    # Shown B before this (re)start, clicked after it: the click is a block total, but the shopper is no trial of
    # this run, so no clicker either (a rate can never pass 1).
    before = experiment.started_at - timedelta(minutes=5)
    rec_id = show(experiment, "B", "v:early", at=before)
    make_event(
        "click",
        "v:early",
        placement="for_you",
        recommendation_id=rec_id,
        product_id="p1",
        occurred_at=experiment.started_at + timedelta(minutes=5),
    )

    control, b = stats.report(experiment).arms

    assert (b.impressions, b.clicks) == (1, 1)
    assert (b.shoppers, b.clickers, b.click_rate) == (1, 0, 0.0)
    assert (control.shoppers, control.clickers) == (1, 0)


def test_a_shopper_in_two_arms_counts_in_each():
    """Bucketing never does this within one run, but stamps are per arm, so the report must not merge arms."""
    experiment = running()
    show(experiment, "A", "v:both", click=True)
    show(experiment, "B", "v:both")

    control, b = stats.report(experiment).arms

    assert (control.shoppers, control.clickers, b.shoppers, b.clickers) == (1, 1, 1, 0)


def test_the_report_is_one_query(django_assert_num_queries):
    experiment = running(shares=(1, 1))
    ExperimentVariant.objects.create(experiment=experiment, name="C", share=1)
    show(experiment, "C", "v:c0", click=True)
    experiment = Experiment.objects.get(pk=experiment.pk)

    with django_assert_num_queries(2):  # the variants, then every arm's counts
        arms = stats.report(experiment).arms

    assert [(a.name, a.shoppers, a.clickers) for a in arms] == [("A", 0, 0), ("B", 0, 0), ("C", 1, 1)]
