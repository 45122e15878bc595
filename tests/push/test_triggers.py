"""The event triggers, sent for real over SMTP (the aiosmtpd server of conftest): cart abandonment, back in stock and
price drop (detected through the real profile sync when a shop product is saved), after purchase, win-back. Each
mails the right shopper the right products and nobody else, once per occasion, within consent and the caps; the admin
previews every trigger."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from recommendations.models import Flow, Message, ProductChange
from recommendations.push.sending import send_due_messages
from recommendations.push.triggers import TRIGGERS
from tests.factories import active_lists, make_event
from tests.push.conftest import NAMES

pytestmark = pytest.mark.django_db

VIEWED = re.compile(r'class="rec-email-viewed"[^>]*><a [^>]*>([^<]*)</a>')


def flow(trigger: str, **fields) -> Flow:
    values = {"name": trigger, "slug": trigger.replace("_", "-"), "size": 3, "min_good_items": 2, "enabled": True}
    return Flow.objects.create(trigger=trigger, **{**values, **fields})


def uid(push_shop, name: str) -> str:
    return str(push_shop.users[name].pk)


def event(push_shop, kind: str, user: str, product: str, at, **fields):
    return make_event(kind, f"u:{uid(push_shop, user)}", product_id=push_shop.pid(product), occurred_at=at, **fields)


def names(push_shop, ids) -> list[str]:
    by_id = {push_shop.pid(n): n for n in NAMES}
    return [by_id[i] for i in ids]


def anchors_in(mail) -> list[str]:
    return VIEWED.findall(mail.html)


def test_cart_abandonment_mails_the_cart_above_the_shoppers_picks_once(smtp, push_shop):
    cart = flow(Flow.Trigger.CART_ABANDONMENT, window_hours=24, delay_hours=2)
    now = timezone.now()
    event(push_shop, "add_to_cart", "bob", "Tent", now - timedelta(hours=6))
    event(push_shop, "add_to_cart", "bob", "Pan", now - timedelta(hours=5))
    event(push_shop, "add_to_cart", "ann", "Kite", now - timedelta(hours=6))
    event(push_shop, "add_to_cart", "ann", "Yo-yo", now - timedelta(hours=5))
    event(push_shop, "remove_from_cart", "ann", "Yo-yo", now - timedelta(hours=4))
    event(push_shop, "add_to_cart", "cy", "Ball", now - timedelta(hours=6))
    event(push_shop, "purchase", "cy", "Ball", now - timedelta(hours=5))  # bought: no cart left
    event(push_shop, "add_to_cart", "dee", "Lamp", now - timedelta(hours=5))  # never opted in

    summary = send_due_messages(now=now)["flows"]["cart-abandonment"]

    assert summary["due"] == 3 and summary["sent"] == 2 and summary["not_consented"] == 1
    assert sorted(r.to[0] for r in smtp.received) == ["ann@example.com", "bob@example.com"]
    (bob,) = smtp.to("bob@example.com")
    assert bob.message["Subject"] == "You left Pan in your cart"
    assert anchors_in(bob) == ["Pan", "Tent"]  # the cart, newest add first
    assert all(name in bob.text for name in ("Pan", "Tent"))
    bob_row = Message.objects.get(user_id=uid(push_shop, "bob"), flow=cart)
    assert names(push_shop, bob_row.products) == ["Lamp", "Stove", "Rope"]  # his picks, without what is in the cart
    (ann,) = smtp.to("ann@example.com")
    assert anchors_in(ann) == ["Kite"]  # Yo-yo was taken out again
    assert names(push_shop, Message.objects.get(user_id=uid(push_shop, "ann")).products) == ["Yo-yo", "Ball", "Drum"]

    again = send_due_messages(now=now + timedelta(hours=1))["flows"]["cart-abandonment"]
    assert again["sent"] == 0 and again["already"] == 2 and len(smtp.received) == 2


def test_a_cart_still_being_filled_is_not_abandoned(smtp, push_shop):
    flow(Flow.Trigger.CART_ABANDONMENT, window_hours=24, delay_hours=2)
    now = timezone.now()
    event(push_shop, "add_to_cart", "bob", "Tent", now - timedelta(hours=6))
    event(push_shop, "add_to_cart", "bob", "Pan", now - timedelta(minutes=20))
    assert send_due_messages(now=now)["flows"]["cart-abandonment"]["due"] == 0
    assert smtp.received == []


def test_back_in_stock_is_detected_by_the_profile_sync_and_mailed_to_who_wanted_it(
    smtp, push_shop, django_capture_on_commit_callbacks
):
    back = flow(Flow.Trigger.BACK_IN_STOCK, window_hours=30 * 24, cap_days=1)
    drum = push_shop.products["Drum"]
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        drum.stock = 0
        drum.save()  # the host's save: post_save syncs the profile
    assert not ProductChange.objects.exists()  # selling out is no occasion
    event(push_shop, "view", "bob", "Drum", now - timedelta(days=3))
    event(push_shop, "favorite", "ann", "Drum", now - timedelta(days=1))
    event(push_shop, "view", "dee", "Drum", now - timedelta(days=1))
    event(push_shop, "view", "cy", "Tent", now - timedelta(days=1))  # never looked at the drum
    with django_capture_on_commit_callbacks(execute=True):
        drum.stock = 4
        drum.save()
    (change,) = ProductChange.objects.all()
    assert change.kind == ProductChange.Kind.BACK_IN_STOCK and change.product_id == push_shop.pid("Drum")
    event(push_shop, "view", "ann", "Drum", change.at + timedelta(minutes=1))  # she has seen it back already

    summary = send_due_messages(now=now + timedelta(minutes=10))["flows"]["back-in-stock"]

    assert summary["due"] == 2 and summary["sent"] == 1  # bob; dee never opted in
    (mail,) = smtp.received
    assert mail.to == ["bob@example.com"]
    assert mail.message["Subject"] == "Drum is back in stock"
    assert anchors_in(mail) == ["Drum"] and "Drum" in mail.text
    row = Message.objects.get(flow=back)
    assert names(push_shop, row.products) == ["Tent", "Lamp", "Stove"]
    assert send_due_messages(now=now + timedelta(hours=2))["flows"]["back-in-stock"]["already"] == 1
    assert len(smtp.received) == 1


def test_a_product_out_of_stock_again_sets_nothing_off(smtp, push_shop, django_capture_on_commit_callbacks):
    flow(Flow.Trigger.BACK_IN_STOCK, window_hours=30 * 24)
    drum = push_shop.products["Drum"]
    event(push_shop, "view", "bob", "Drum", timezone.now() - timedelta(days=3))
    for stock in (0, 4, 0):
        with django_capture_on_commit_callbacks(execute=True):
            drum.stock = stock
            drum.save()
    assert ProductChange.objects.count() == 1
    assert send_due_messages()["flows"]["back-in-stock"]["due"] == 0
    assert smtp.received == []


def test_price_drops_add_up_to_the_flows_threshold(smtp, push_shop, django_capture_on_commit_callbacks):
    drops = flow(Flow.Trigger.PRICE_DROP, window_hours=30 * 24, price_drop_percent=10)
    ball, lamp = push_shop.products["Ball"], push_shop.products["Lamp"]
    now = timezone.now()
    event(push_shop, "view", "bob", "Ball", now - timedelta(days=2))
    event(push_shop, "view", "ann", "Lamp", now - timedelta(days=2))

    def reprice(product, price: str) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            product.price = Decimal(price)
            product.save()

    reprice(ball, "9.50")  # 5 % off: below the flow's 10 %
    reprice(lamp, "12.00")  # dearer: no change recorded
    assert send_due_messages(now=now + timedelta(minutes=5))["flows"]["price-drop"]["due"] == 0
    reprice(ball, "8.90")  # 11 % below the 10.00 bob saw
    assert list(ProductChange.objects.order_by("pk").values_list("kind", "old", "new")) == [
        ("price_drop", Decimal("10.00"), Decimal("9.50")),
        ("price_drop", Decimal("9.50"), Decimal("8.90")),
    ]

    summary = send_due_messages(now=now + timedelta(minutes=10))["flows"]["price-drop"]

    assert summary["due"] == 1 and summary["sent"] == 1
    (mail,) = smtp.received
    assert mail.to == ["bob@example.com"] and mail.message["Subject"] == "Ball is now cheaper"
    assert anchors_in(mail) == ["Ball"] and "8.90" in mail.html and "8.90" in mail.text
    # The price bob saw before the drops, not the one in between: in both bodies, next to the new one.
    assert re.search(r"8\.90</span> <span class=\"rec-email-was\"[^>]*>was 10\.00</span>", mail.html)
    assert "Ball (8.90, was 10.00)" in mail.text and "9.50" not in mail.text
    assert names(push_shop, Message.objects.get(flow=drops).products) == ["Tent", "Lamp", "Stove"]
    assert send_due_messages(now=now + timedelta(hours=1))["flows"]["price-drop"]["sent"] == 0


def test_after_purchase_mails_what_goes_with_it_n_days_later(smtp, push_shop):
    after = flow(Flow.Trigger.AFTER_PURCHASE, days=7, placement="bought_together")
    products = push_shop.products

    def listed(*names_):
        return [(products[n], 1.0 - i / 10, "together") for i, n in enumerate(names_)]

    active_lists(
        for_you={f"u:{uid(push_shop, 'bob')}": listed("Tent", "Lamp", "Stove", "Rope")},
        bought_together={push_shop.pid("Tent"): listed("Pan", "Rope", "Kite"), push_shop.pid("Kite"): listed("Ball")},
    )
    now = timezone.now()
    event(push_shop, "purchase", "bob", "Tent", now - timedelta(days=7, hours=2))
    event(push_shop, "purchase", "ann", "Kite", now - timedelta(days=3))  # not yet a week
    event(push_shop, "purchase", "cy", "Kite", now - timedelta(days=7, hours=1))
    event(push_shop, "purchase", "cy", "Ball", now - timedelta(days=1))  # bought again since: not that occasion yet

    summary = send_due_messages(now=now)["flows"]["after-purchase"]

    assert summary["due"] == 1 and summary["sent"] == 1
    (mail,) = smtp.received
    assert mail.to == ["bob@example.com"] and mail.message["Subject"] == "Goes well with your Tent"
    assert anchors_in(mail) == ["Tent"]
    assert names(push_shop, Message.objects.get(flow=after).products) == ["Pan", "Rope", "Kite"]
    # A day on, the purchase is still in the flow's window: the same occasion, not mailed again.
    assert send_due_messages(now=now + timedelta(hours=20))["flows"]["after-purchase"]["already"] == 1
    assert len(smtp.received) == 1


def test_win_back_mails_shoppers_away_for_n_days_and_an_emails_impression_is_no_visit(smtp, push_shop):
    win = flow(Flow.Trigger.WIN_BACK, days=30, window_hours=48, size=4, min_good_items=3)
    now = timezone.now()
    event(push_shop, "view", "bob", "Tent", now - timedelta(days=30, hours=5))
    make_event(
        "impression",
        f"u:{uid(push_shop, 'bob')}",
        placement="email:weekly",
        occurred_at=now - timedelta(days=2),
    )
    event(push_shop, "view", "ann", "Kite", now - timedelta(days=30, hours=5))
    event(push_shop, "view", "ann", "Kite", now - timedelta(days=2))  # she came back
    event(push_shop, "purchase", "dee", "Kite", now - timedelta(days=31))  # never opted in

    summary = send_due_messages(now=now)["flows"]["win-back"]

    assert summary["due"] == 2 and summary["sent"] == 1 and summary["not_consented"] == 1
    (mail,) = smtp.received
    assert mail.to == ["bob@example.com"] and mail.message["Subject"] == "We have new picks for you"
    assert anchors_in(mail) == []
    assert names(push_shop, Message.objects.get(flow=win).products) == ["Tent", "Lamp", "Stove", "Rope"]
    assert send_due_messages(now=now + timedelta(hours=6))["flows"]["win-back"]["already"] == 1
    assert len(smtp.received) == 1


def test_the_triggers_keep_to_the_caps_and_consent(smtp, push_shop, weekly):
    win = flow(Flow.Trigger.WIN_BACK, days=30, window_hours=48, size=4, min_good_items=3)
    now = timezone.now()
    for name in ("ann", "bob"):
        event(push_shop, "view", name, "Tent", now - timedelta(days=30, hours=5))
    # ann got this week's picks an hour ago: the global cap (16 hours) holds her win-back e-mail.
    Message.objects.create(
        key="other",
        flow=weekly,
        user_id=uid(push_shop, "ann"),
        period="x",
        status=Message.Status.SENT,
        created_at=now - timedelta(hours=1),
    )
    from recommendations.push.consent import set_email_consent

    set_email_consent(uid(push_shop, "bob"), False, via="weekly")  # bob unsubscribed

    summary = send_due_messages(flow="win-back", now=now)["flows"]["win-back"]

    assert summary["skipped_cap"] == 1 and summary["not_consented"] == 1 and summary["sent"] == 0
    assert smtp.received == []
    assert Message.objects.get(flow=win).status == Message.Status.SKIPPED_CAP


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_the_admin_previews_every_trigger(staff_client, smtp, push_shop, trigger):
    placement = "for_you" if trigger in ("weekly_picks", "win_back") else "similar"
    row = flow(trigger, placement=placement)
    bob = uid(push_shop, "bob")
    event(push_shop, "add_to_cart", "bob", "Tent", timezone.now() - timedelta(hours=5))
    page = staff_client.get(reverse("admin:recommendations_flow_preview", args=[row.pk]), {"user": bob})
    assert page.status_code == 200
    shown = page.content.decode()
    subject = re.search(r'id="rec-email-subject">([^<]*)<', shown).group(1)
    assert subject.strip()
    assert 'id="rec-email-text"' in shown and "srcdoc=" in shown
    assert not Message.objects.exists()


def test_the_flow_form_takes_the_new_fields_and_refuses_a_product_placement_without_products(staff_client, db):
    data = {
        "name": "Win-back",
        "slug": "win-back",
        "trigger": "win_back",
        "window_hours": 24,
        "delay_hours": 2,
        "placement": "bought_together",
        "size": 4,
        "min_good_items": 2,
        "subject": "",
        "cap_days": 7,
        "days": 45,
        "best_hour": "true",
    }
    page = staff_client.post(reverse("admin:recommendations_flow_add"), data)
    assert set(page.context["adminform"].form.errors) == {"placement"}
    page = staff_client.post(reverse("admin:recommendations_flow_add"), {**data, "trigger": "after_purchase"})
    assert page.status_code == 302
    saved = Flow.objects.get(slug="win-back")
    assert (saved.days, saved.price_drop_percent, saved.best_hour) == (45, 10, True)
