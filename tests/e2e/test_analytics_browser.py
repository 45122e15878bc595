"""Staff read the analytics in a real browser: totals, server-rendered SVG charts, the filters, the CSV, "Refresh now".

A month of blocks, clicks and attributed sales on four placements are written as events and rolled up, the way
the hourly task does it. The page is screenshotted on every run (into the test's temporary directory); with
UPDATE_SCREENSHOTS=1 the screenshot replaces docs/img/analytics.png, the README's picture of the page.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from celery import current_app
from django.utils import timezone
from playwright.sync_api import Page, expect

from recommendations import analytics, tracking
from recommendations.models import PlacementDay
from tests.factories import make_user

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAYS = 30
STAFF_PASSWORD = "staff-horse-battery"
# placement: (blocks per day, items per block, click rate per block, share of exploration slots)
TRAFFIC = {
    "for_you": (180, 8, 0.075, 0.12),
    "similar": (130, 6, 0.055, 0.0),
    "bought_together": (60, 4, 0.09, 0.0),
    "trending": (100, 8, 0.035, 0.1),
}


def write_history(seed: int = 3) -> None:
    """Deterministic traffic with a weekly rhythm: blocks, clicks, attributed carts and orders on each placement."""
    rng = random.Random(seed)
    today = analytics.local_today()
    tz = timezone.get_default_timezone()
    events = []
    order = 0
    for back in range(DAYS):
        day = today - timedelta(days=back)
        weekly = 1 + 0.25 * math.sin(2 * math.pi * day.toordinal() / 7)
        noon = datetime.combine(day, time(12)).replace(tzinfo=tz)
        for placement, (blocks, size, rate, explore) in TRAFFIC.items():
            for b in range(int(blocks * weekly * rng.uniform(0.85, 1.15))):
                visitor = f"{rng.getrandbits(64):016x}{b:016x}"
                at = noon + timedelta(minutes=rng.uniform(-600, 600))
                rec = f"{placement}-{back}-{b}"
                items = [str(rng.randrange(1, 200)) for _ in range(size)]
                sources = ["exploration" if rng.random() < explore else "model" for _ in items]
                events.append(
                    tracking.build_event(
                        "impression",
                        visitor_id=visitor,
                        placement=placement,
                        recommendation_id=rec,
                        context={"items": items, "sources": sources},
                        occurred_at=at,
                    )
                )
                if rng.random() >= rate * weekly:
                    continue
                product = rng.choice(items)
                fields = {"visitor_id": visitor, "product_id": product, "placement": placement}
                events.append(tracking.build_event("click", recommendation_id=rec, occurred_at=at, **fields))
                if rng.random() < 0.35:
                    stamped = {**fields, "recommendation_id": rec, "context": {"attributed": "click"}}
                    events.append(tracking.build_event("add_to_cart", occurred_at=at + timedelta(minutes=1), **stamped))
                    if rng.random() < 0.5:
                        order += 1
                        stamped["context"] = {"attributed": "click", "order_id": order}
                        value = Decimal(rng.randrange(900, 8900)) / 100
                        events.append(
                            tracking.build_event(
                                "purchase", value=value, occurred_at=at + timedelta(minutes=5), **stamped
                            )
                        )
    tracking.store_events(events)
    analytics.rebuild_days(today - timedelta(days=DAYS - 1), today)


@pytest.fixture
def eager():
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True  # the live server runs in this process: "Refresh now" runs inline
    yield
    current_app.conf.task_always_eager = previous


def test_staff_read_the_analytics_with_charts_filter_export_and_refresh(page: Page, page_errors, eager, tmp_path):
    write_history()
    staff = make_user("analytics-staff", password=STAFF_PASSWORD, is_staff=True, is_superuser=True)
    today = analytics.local_today()

    page.goto("/admin/recommendations/placementday/")
    page.get_by_label("Username").fill(staff.username)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # Totals per placement, and four charts drawn by the server (no script on the page draws them).
    totals = page.locator("#rec-totals")
    expect(totals.get_by_role("rowheader", name="for_you")).to_be_visible()
    expect(totals).to_contain_text("All placements")
    for chart in ("ctr", "impressions", "clicks", "revenue"):
        svg = page.locator(f"#rec-chart-{chart} svg[role=img]")
        expect(svg).to_be_visible()
        box = svg.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 150, (chart, box)
    ctr = page.get_by_role("img", name="Click-through rate by placement")
    expect(ctr.locator("polyline")).to_have_count(len(TRAFFIC))
    expect(page.locator("#rec-chart-impressions rect title").first).to_contain_text("·")
    expect(page.locator("#rec-from")).to_have_value(str(today - timedelta(days=29)))

    shot = tmp_path / "analytics.png"
    charts_box = page.locator(".rec-charts").bounding_box()
    height = int(charts_box["y"] + charts_box["height"]) + 16 if charts_box else 1000
    page.screenshot(path=shot, full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": height})
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img" / "analytics.png").write_bytes(shot.read_bytes())

    # The filters: one placement over the last week.
    week_ago = today - timedelta(days=6)
    page.locator("#rec-from").fill(str(week_ago))
    page.get_by_label("Placement", exact=True).select_option("similar")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(rf"from={week_ago}&to={today}&placement=similar"))
    expect(totals.locator("tbody tr")).to_have_count(1)
    expect(totals.get_by_role("rowheader", name="similar")).to_be_visible()

    # The export has the same filters.
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    assert download.value.suggested_filename == f"analytics-{week_ago}-{today}-similar.csv"
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows[0] == list(analytics.CSV_HEADER)
    assert {r[1] for r in rows[1:]} == {"similar"} and len(rows) == 1 + 7

    # "Refresh now" rebuilds the shown days from the events: a row deleted by hand comes back.
    PlacementDay.objects.filter(placement="similar", day=today).delete()
    page.get_by_role("button", name="Refresh now").click()
    expect(page.locator(".messagelist")).to_contain_text("were rebuilt")
    assert PlacementDay.objects.filter(placement="similar", day=today).exists()
    assert page_errors == []

    # A bad date is a message on the page, not an error page.
    page.goto("/admin/recommendations/placementday/?from=2026-02-30")
    expect(page.locator(".errornote")).to_contain_text("is not a date")
