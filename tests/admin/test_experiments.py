"""The experiment report screen: a test with a handful of shoppers says "not enough data" and offers no winner, only a
better arm is offered once there are enough, and the tables scroll inside their own box.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recommendations.experiments import report as stats
from recommendations.models import Experiment, ExperimentVariant
from tests.factories import make_event

pytestmark = pytest.mark.django_db


def running_experiment() -> Experiment:
    experiment = Experiment.objects.create(
        name="tiny",
        placement="for_you",
        status=Experiment.Status.RUNNING,
        salt="c" * 32,
        started_at=timezone.now() - timedelta(days=1),
    )
    for name in ("A", "B"):
        ExperimentVariant.objects.create(experiment=experiment, name=name, share=1)
    return experiment


def show(experiment: Experiment, arm: str, shopper: str, click: bool = False) -> None:
    rec_id = uuid.uuid4().hex
    at = experiment.started_at + timedelta(hours=1)
    fields = {"placement": "for_you", "recommendation_id": rec_id, "product_id": "p1"}
    make_event("impression", shopper, variant=f"{experiment.pk}:{arm}", occurred_at=at, **fields)
    if click:
        make_event("click", shopper, occurred_at=at + timedelta(seconds=5), **fields)


def report_page(client: Client, experiment: Experiment) -> str:
    return client.get(reverse("admin:recommendations_experiment_change", args=[experiment.pk])).content.decode()


def test_six_visitors_show_not_enough_data_and_no_winner_to_promote(staff_client):
    experiment = running_experiment()
    for i in range(3):
        show(experiment, "A", f"v:a{i}")
        show(experiment, "B", f"v:b{i}")

    control, b = stats.report(experiment).arms
    assert (control.shoppers, b.shoppers) == (3, 3)
    assert not b.click_enough and not b.conversion_enough
    assert stats.report(experiment).winner is None

    page = report_page(staff_client, experiment)
    assert page.count("not enough data") >= 2  # click rate and conversion against the control
    assert "+0.00% to +0.00%" not in page  # the zero-width interval it used to show
    assert "Promote the winner" not in page
    assert page.count("Promote this arm") == 2  # staff may still promote an arm by hand, under a plain label


def test_with_enough_shoppers_only_the_better_arm_is_offered_as_the_winner(staff_client):
    experiment = running_experiment()
    for i in range(200):
        show(experiment, "A", f"v:a{i}", click=i < 10)
        show(experiment, "B", f"v:b{i}", click=i < 40)

    result = stats.report(experiment)
    b = result.arms[1]
    assert b.click_enough and b.click_rate_vs_control.significant
    assert result.winner is not None and result.winner.name == "B"

    page = report_page(staff_client, experiment)
    assert page.count("Promote the winner") == 1 and page.count("Promote this arm") == 1
    b_row = re.search(r"<tr[^>]*>\s*<td>B\b.*?</tr>", page, re.S).group(0)
    assert "Promote the winner" in b_row


def test_the_report_tables_scroll_inside_their_own_box(staff_client):
    experiment = running_experiment()
    show(experiment, "A", "v:a")
    page = report_page(staff_client, experiment)
    css = re.search(r"\.rec-experiment \.rec-table-scroll \{([^}]*)\}", page)
    assert css and "overflow-x:auto" in css.group(1) and "max-width:100%" in css.group(1)
    for box in ("rec-experiment-arms", "rec-experiment-comparisons"):
        assert re.search(rf'<div class="rec-table-scroll" id="{box}">\s*<table>', page), box
    # Headers wrap: nothing forces the header row onto one 2,000 px line.
    assert not re.search(r"th\.num[^{]*\{[^}]*white-space:nowrap", page)
