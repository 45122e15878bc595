"""`manage.py create_demo_logins`: the two logins of the demo, a staff superuser and a shopper with a history.

Safe to run again and again: it resets the passwords and the shopper's yes to e-mail, and gives the shopper a history
only when it has none.
The shopper is preferably a generated shopper (the one with the most orders) renamed to "shopper", so its
precomputed "Recommended for you" list is already there; without generated data it gets a few sessions of its own.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from recommendations import privacy
from recommendations.models import Event
from recommendations.push.consent import set_email_consent
from recommendations.tracking import build_event
from shop.models import Order, OrderLine, Product

STAFF = "staff"
SHOPPER = "shopper"
DEFAULT_STAFF_PASSWORD = "staff-demo-password"
DEFAULT_SHOPPER_PASSWORD = "shopper-demo-password"
# The address `make serve` serves; the Makefile passes its own with --site, so the printed links are the served ones.
SITE = "http://127.0.0.1:8000"
SITE_ENV = "DEMO_SITE_URL"


class Command(BaseCommand):
    help = (
        f"Create or reset the demo logins: '{STAFF}' (superuser) and '{SHOPPER}' (a shopper with a history, who "
        "agreed to recommendations by e-mail). "
        "Refuses to run with DEBUG off unless --force is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--staff-password", default=DEFAULT_STAFF_PASSWORD)
        parser.add_argument("--shopper-password", default=DEFAULT_SHOPPER_PASSWORD)
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG off (not for real shops).")
        parser.add_argument(
            "--site",
            default=os.environ.get(SITE_ENV) or SITE,
            help=f"The address the shop is served at, printed with the logins (default ${SITE_ENV} or {SITE}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "DEBUG is off: this looks like a real deployment, and demo logins with printed passwords do not "
                "belong there. Pass --force if you really want them."
            )
        site = site_url(options["site"])
        with transaction.atomic():
            self.staff(options["staff_password"])
            shopper, note = self.shopper(options["shopper_password"])
        events = Event.objects.filter(user_id=str(shopper.pk)).exclude(event_type="impression").count()
        orders = Order.objects.filter(user=shopper).count()
        width = max(len(options["staff_password"]), len(options["shopper_password"]))
        lines = [
            f"Demo logins. The shop: {site}/  The admin: {site}/admin/",
            f"  username: {STAFF:<8} password: {options['staff_password']:<{width}}   superuser, for the admin",
            f"  username: {SHOPPER:<8} password: {options['shopper_password']:<{width}}   "
            f"{events} events, {orders} orders; its home page shows personal recommendations",
        ]
        if note:
            lines.append(f"  note: {note}")
        self.stdout.write("\n".join(lines))

    def staff(self, password: str) -> Any:
        User = get_user_model()
        user, _created = User.objects.get_or_create(username=STAFF, defaults={"email": "staff@example.com"})
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        return user

    def shopper(self, password: str) -> tuple[Any, str]:
        """The shopper login and a note for the operator (empty when all is well)."""
        User = get_user_model()
        note = ""
        user = User.objects.filter(username=SHOPPER).first()
        if user is None:
            user = self.busiest_generated_shopper()
            if user is not None:
                user.username = SHOPPER
            else:
                user = User(username=SHOPPER, first_name="Demo", last_name="Shopper")
            user.email = "shopper@example.com"
        user.is_active = True
        user.set_password(password)
        user.save()
        # The demo shopper said yes to personal recommendations on their account, so they see them at once.
        privacy.set_account_choice(user.pk, True)
        # ... and yes to recommendations by e-mail (the account page's switch), so the demo's flows have someone to
        # send to. A shopper without an address gets the demo's; one they have is kept.
        if not user.email:
            user.email = "shopper@example.com"
            user.save(update_fields=["email"])
        set_email_consent(user.pk, True)
        if not Event.objects.filter(user_id=str(user.pk)).exists():
            if give_history(user):
                note = "the shopper got a short history just now; run precompute_recommendations to use it."
            else:
                note = "there are no products yet, so the shopper has no history; run generate_demo_data first."
        return user, note

    @staticmethod
    def busiest_generated_shopper() -> Any:
        """The generated shopper with the most orders (ties: the oldest account), or None."""
        User = get_user_model()
        row = (
            Order.objects.filter(user__username__startswith="demo_user_")
            .values("user")
            .annotate(orders=Count("id"))
            .order_by("-orders", "user")
            .first()
        )
        return User.objects.get(pk=row["user"]) if row else None


def site_url(value: str) -> str:
    """The served address as given (http:// added to a bare host:port), without a trailing slash.

    An unusable value is a CommandError: one line, non-zero exit.
    """
    site = (value or "").strip().rstrip("/")
    if site and "://" not in site:
        site = f"http://{site}"
    scheme, _, rest = site.partition("://")
    if scheme not in ("http", "https") or not rest or any(c.isspace() for c in rest):
        raise CommandError(f"--site must be an http(s) address such as {SITE}, not {value!r}")
    return site


def give_history(user: Any) -> bool:
    """A few days of browsing in the best-stocked category and one order; False when there is nothing to browse."""
    category = (
        Product.objects.filter(is_active=True, stock__gt=0)
        .values("category")
        .annotate(n=Count("id"))
        .order_by("-n", "category")
        .first()
    )
    if category is None:
        return False
    products = list(
        Product.objects.filter(is_active=True, stock__gt=0, category=category["category"]).order_by("-created_at")[:6]
    )
    now = timezone.now()
    events = []
    for day, product in enumerate(products):
        when = now - timedelta(days=len(products) - day, hours=2)
        events.append(
            build_event(
                "view",
                user_id=str(user.pk),
                product_id=product.pk,
                value=product.price,
                occurred_at=when,
                client_time=when,
            )
        )
    bought = products[0]
    when = now - timedelta(days=1)
    order = Order.objects.create(
        user=user, email=user.email, full_name=user.get_full_name(), created_at=when, total=bought.price
    )
    OrderLine.objects.create(order=order, product=bought, quantity=1, unit_price=bought.price)
    events.append(
        build_event(
            "add_to_cart",
            user_id=str(user.pk),
            product_id=bought.pk,
            value=bought.price,
            occurred_at=when - timedelta(minutes=3),
            client_time=when - timedelta(minutes=3),
        )
    )
    events.append(
        build_event(
            "purchase",
            user_id=str(user.pk),
            product_id=bought.pk,
            value=bought.price,
            context={"order_id": order.pk},
            occurred_at=when,
            client_time=when,
        )
    )
    Event.objects.bulk_create(events)
    return True
