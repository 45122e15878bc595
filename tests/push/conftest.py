"""Push e-mail fixtures: Django's e-mail backend pointed at the real SMTP server of tests/conftest.py (aiosmtpd on a
free 127.0.0.1 port, `smtp_server`, shared with the browser tests), a small shop with stored lists, shoppers who
opted in (and one who did not), and the flows.

Each shopper's for_you list is stated exactly (factories.active_lists), so a test checks that the e-mail holds that
shopper's own products, not any list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from recommendations import catalog
from recommendations.models import Flow, ProductProfile
from recommendations.push.consent import set_email_consent
from tests.conftest import SMTPHandler
from tests.factories import active_lists, make_category, make_product, make_user

SITE = "http://testserver"  # the test client's host: a link from an e-mail is followed by the client as it is


@pytest.fixture
def smtp(smtp_server: tuple[SMTPHandler, int], settings: Any) -> SMTPHandler:
    """Django's SMTP backend pointed at the test's server, and the app's links at the test client's host."""
    handler, port = smtp_server
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 10
    settings.DEFAULT_FROM_EMAIL = "Shop <shop@example.com>"
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SITE_URL": SITE}
    return handler


@dataclass
class PushShop:
    products: dict[str, Any]
    users: dict[str, Any]

    def pid(self, name: str) -> str:
        return str(self.products[name].pk)


NAMES = ("Kite", "Yo-yo", "Ball", "Drum", "Tent", "Lamp", "Stove", "Rope", "Pan", "Pot")


@pytest.fixture
def push_shop(db: None) -> PushShop:
    """Ten products over four categories; ann and bob opted in with lists of their own, cy opted in with none (a
    weak list: best sellers only), dee has a list but never opted in."""
    categories = [make_category(slug=f"push-{n}") for n in range(4)]
    products = {name: make_product(name, category=categories[i % 4]) for i, name in enumerate(NAMES)}
    catalog.sync_products()
    ProductProfile.objects.filter(product_id=str(products["Pot"].pk)).update(sales_count=50)  # the best seller
    users = {name: make_user(name, email=f"{name}@example.com") for name in ("ann", "bob", "cy", "dee")}
    for name in ("ann", "bob", "cy"):
        set_email_consent(users[name].pk, True)

    def listed(*names: str) -> list[tuple[Any, float, str]]:
        return [(products[n], 1.0 - i / 10, "for_you") for i, n in enumerate(names)]

    active_lists(
        for_you={
            f"u:{users['ann'].pk}": listed("Kite", "Yo-yo", "Ball", "Drum"),
            f"u:{users['bob'].pk}": listed("Tent", "Lamp", "Stove", "Rope"),
            f"u:{users['dee'].pk}": listed("Kite", "Tent", "Lamp", "Ball"),
        },
        similar={str(products["Tent"].pk): listed("Rope", "Stove", "Lamp")},
    )
    return PushShop(products, users)


@pytest.fixture
def weekly(db: None) -> Flow:
    return Flow.objects.create(
        name="Weekly picks", slug="weekly", trigger=Flow.Trigger.WEEKLY_PICKS, size=4, min_good_items=3, enabled=True
    )


@pytest.fixture
def browse(db: None) -> Flow:
    return Flow.objects.create(
        name="Browse abandonment",
        slug="browse",
        trigger=Flow.Trigger.BROWSE_ABANDONMENT,
        placement="similar",
        window_hours=24,
        delay_hours=2,
        size=3,
        min_good_items=2,
        cap_days=3,
        enabled=True,
    )
