"""The experiment report fits the admin page in a real browser (issue 17, item 10).

Its arms table has sixteen columns; laid out on one line each it made the page 1,980 px wide. Now the headers wrap and
each table scrolls inside its own box, so the page is never wider than the window.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from recommendations.models import Event, Experiment, ExperimentVariant
from recommendations.tracking import build_event
from tests.e2e.browser import VIEWPORT
from tests.factories import make_user

pytestmark = pytest.mark.e2e

STAFF_PASSWORD = "staff-horse-battery"


def experiment_with_traffic() -> Experiment:
    experiment = Experiment.objects.create(
        name="Model against best sellers",
        placement="for_you",
        status=Experiment.Status.RUNNING,
        salt="d" * 32,
        started_at=timezone.now() - timedelta(days=3),
    )
    events = []
    for arm, clicking in (("control-model", 60), ("challenger-popular", 90)):
        ExperimentVariant.objects.create(experiment=experiment, name=arm, share=1)
        for i in range(1200):
            rec_id = uuid.uuid4().hex
            at = experiment.started_at + timedelta(minutes=i)
            fields = {"visitor_id": f"{arm}-{i}", "placement": "for_you", "recommendation_id": rec_id}
            stamp = f"{experiment.pk}:{arm}"
            events.append(build_event("impression", variant=stamp, occurred_at=at, **fields))
            if i < clicking:
                events.append(build_event("click", product_id="1", variant=stamp, occurred_at=at, **fields))
    Event.objects.bulk_create(events)
    return experiment


def test_the_experiment_report_is_no_wider_than_the_window(page: Page, page_errors: list[str], tmp_path):
    experiment = experiment_with_traffic()
    staff = make_user("experiment-staff", password=STAFF_PASSWORD, is_staff=True, is_superuser=True)

    page.goto(f"/admin/recommendations/experiment/{experiment.pk}/change/")
    page.get_by_label("Username").fill(staff.username)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    arms = page.locator(".rec-experiment table").first
    expect(arms).to_be_visible()
    expect(arms).to_contain_text("challenger-popular")

    width = VIEWPORT["width"]
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= width, f"the report makes the page {page_width} px wide in a {width} px window"
    expect(page.get_by_role("button", name="Promote the winner")).to_have_count(1)
    for box_id in ("rec-experiment-arms", "rec-experiment-comparisons"):
        box = page.locator(f"#{box_id}").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (box_id, box)
        # At this common width the columns wrap enough to fit: nothing hides behind the box's scroll bar.
        overflow = page.locator(f"#{box_id}").evaluate("box => box.scrollWidth - box.clientWidth")
        assert overflow <= 0, (box_id, overflow)
    page.screenshot(path=tmp_path / "experiment-report.png", full_page=True)  # kept in the test's directory
    assert page_errors == []
