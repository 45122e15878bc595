"""A browse-abandonment e-mail, end to end in a real browser: the demo's shopper looks at two products and leaves; the
flow e-mails them over real SMTP; the e-mail's link brings them back to the product, they buy it, and staff see the
click and the order on the flow's placement (`email:<slug>`) in the analytics.

The shopper is the demo's own login (`manage.py create_demo_logins`), who said yes to recommendations by e-mail, as
their account page shows. Their views are moved back in the database past the flow's delay instead of waiting for it.
The sent e-mail is rendered in Chromium and saved as /tmp/email_sent.png, the analytics page as
/tmp/email_analytics.png (the README's pictures; UPDATE_SCREENSHOTS=1 also copies them to docs/img/).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from recommendations import analytics
from recommendations.models import Event, Flow, Message
from shop.management.commands.create_demo_logins import DEFAULT_SHOPPER_PASSWORD, DEFAULT_STAFF_PASSWORD
from tests.conftest import SMTPHandler
from tests.e2e.browser import VIEWPORT
from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.store import SmallShop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FLOW = "come-back"
PLACEMENT = f"email:{FLOW}"
SENT_SHOT, ANALYTICS_SHOT = Path("/tmp/email_sent.png"), Path("/tmp/email_analytics.png")


@pytest.fixture
def mail(smtp_server: tuple[SMTPHandler, int], settings: Any, live_server: Any) -> SMTPHandler:
    """Django's SMTP backend sending to the test's SMTP server; the e-mails' links lead to the live server; no quiet
    hours (the test runs at any hour of the night)."""
    handler, port = smtp_server
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "Demo shop <shop@example.com>"
    settings.RECOMMENDATIONS = {
        **settings.RECOMMENDATIONS,
        "SITE_URL": live_server.url,
        "EMAIL_QUIET_HOURS": None,
    }
    return handler


@pytest.fixture
def demo_logins(settings: Any, small_shop: SmallShop) -> Any:
    """The demo's `shopper` and `staff` logins, made by the demo's own command (it wants DEBUG on, as the demo)."""
    from django.contrib.auth import get_user_model

    settings.DEBUG = True
    call_command("create_demo_logins", stdout=io.StringIO())
    settings.DEBUG = False
    return get_user_model().objects.get(username="shopper")


def log_in(page: Page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_a_browse_abandonment_email_brings_the_shopper_back_to_buy_and_staff_see_it_counted(
    page: Page, page_errors: list[str], browser: Browser, live_server: Any, mail: SMTPHandler, small_shop, demo_logins
):
    shopper = demo_logins
    flow = Flow.objects.create(
        name="Come back for it",
        slug=FLOW,
        trigger=Flow.Trigger.BROWSE_ABANDONMENT,
        placement="similar",
        window_hours=6,
        delay_hours=1,
        size=3,
        min_good_items=1,
        cap_days=1,
        enabled=True,
    )
    started = timezone.now()

    # The demo shopper logs in; their account page says they get recommendations by e-mail.
    page.goto("/accounts/login/")
    log_in(page, "shopper", DEFAULT_SHOPPER_PASSWORD)
    page.goto("/account/")
    switch = page.locator("#email-recommendations")
    expect(switch).to_contain_text("Recommendations by e-mail")
    expect(switch.get_by_role("button", name="Stop the e-mails")).to_be_visible()

    # They look at two camping products, add nothing to the cart, and leave.
    camping = small_shop.in_category(small_shop.categories[2])
    looked, last = camping[0], camping[1]
    for product in (looked, last):
        page.goto(product.get_absolute_url())
        expect(page.get_by_role("heading", level=1)).to_have_text(product.name)
    page.close()
    views = Event.objects.filter(user_id=str(shopper.pk), event_type="view", occurred_at__gte=started)
    assert sorted(views.values_list("product_id", flat=True)) == sorted([str(looked.pk), str(last.pk)])
    # Two hours pass (the flow waits an hour after the last view): the views are moved back instead.
    views.update(occurred_at=F("occurred_at") - timedelta(hours=2))

    out = io.StringIO()
    call_command("send_flows", "--flow", FLOW, stdout=out, stderr=io.StringIO())
    (received,) = mail.to(shopper.email)
    row = Message.objects.get(flow=flow, user_id=str(shopper.pk))
    assert row.status == Message.Status.SENT, (row.status, row.error, out.getvalue())
    assert received.message["Subject"] == f"Still thinking about {last.name}?"
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # The e-mail as the shopper sees it, in the browser: what they looked at, then similar products.
    context = page.context
    inbox = context.new_page()
    inbox.set_viewport_size({"width": 720, "height": 400})  # a mail client's reading pane; the shot grows to fit
    inbox.set_content(received.html)
    viewed_links = inbox.locator(".rec-email-viewed a")
    expect(viewed_links).to_have_text([last.name, looked.name])  # newest first
    picks = inbox.locator(".rec-email-item a")
    expect(picks).not_to_have_count(0)
    assert not {looked.name, last.name} & set(picks.all_inner_texts())  # what they viewed is shown above, not again
    inbox.screenshot(path=str(SENT_SHOT), full_page=True)
    link = viewed_links.first.get_attribute("href") or ""
    assert link.startswith(f"{live_server.url}/e/c/"), link
    inbox.close()

    # The link brings them back to the product (the flow's campaign on the URL); the click is the flow's.
    page = context.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text(last.name)
    expect(page).to_have_url(
        re.compile(rf"{re.escape(last.get_absolute_url())}\?utm_medium=email&utm_campaign={FLOW}$")
    )
    click = Event.objects.get(event_type="click", placement=PLACEMENT)
    assert (click.user_id, click.product_id, click.recommendation_id) == (
        str(shopper.pk),
        str(last.pk),
        row.recommendation_id,
    )

    # They buy it, the way the demo shop sells: add to cart, checkout, place the order.
    page.get_by_role("button", name="Add to cart").click()
    expect(page).to_have_url(re.compile(r"/cart/$"))
    page.get_by_role("link", name="Go to checkout").click()
    expect(page.get_by_label("Email")).to_have_value(shopper.email)
    page.get_by_label("Full name").fill("Demo Shopper")
    page.get_by_label("Delivery address").fill("1 Harbour Lane\nPortsmouth")
    page.get_by_role("button", name=re.compile(r"^Place order")).click()
    expect(page.locator(".messages")).to_contain_text("has been placed")
    for event_type in ("add_to_cart", "purchase"):
        event = Event.objects.get(user_id=str(shopper.pk), event_type=event_type, product_id=str(last.pk))
        assert (event.placement, event.recommendation_id) == (PLACEMENT, row.recommendation_id), event_type
    assert page_errors == []

    # The hourly rollup, then staff read the flow's placement in the analytics. (The placements page, filtered by
    # the flow's placement: the per-flow page can take over these assertions.)
    today = analytics.local_today()
    analytics.rebuild_days(today - timedelta(days=1), today)
    staff = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    staff.set_default_timeout(TIMEOUT_MS)
    try:
        admin = staff.new_page()
        admin.goto(f"/admin/recommendations/placementday/?placement={PLACEMENT}")
        log_in(admin, "staff", DEFAULT_STAFF_PASSWORD)
        totals = admin.locator("#rec-totals tbody tr")
        expect(totals).to_have_count(1)
        expect(totals.first.get_by_role("rowheader")).to_have_text(PLACEMENT)
        impressions, clicks, ctr, carts, orders, revenue = totals.first.locator("td").all_inner_texts()[:6]
        assert (impressions, clicks, ctr, carts, orders) == ("1", "1", "100%", "1", "1"), (impressions, ctr)
        assert revenue == f"{last.price:,.2f}"
        admin.screenshot(path=str(ANALYTICS_SHOT), full_page=True)
    finally:
        staff.close()
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(SENT_SHOT, ROOT / "docs" / "img" / "email-sent.png")
        shutil.copyfile(ANALYTICS_SHOT, ROOT / "docs" / "img" / "email-analytics.png")
