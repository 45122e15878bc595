"""Each kind of trigger: who is due for a flow now, for which period (the period is part of the message's
idempotency key: one e-mail per flow, shopper and period, ever, so a period names the occasion), since when (the
moment the occasion became due: timing waits from there for the shopper's best hour), and which products set it off.

- weekly_picks: everyone in the e-mail audience (push.consent.audience), once per ISO week ("2026-W49"), due from the
  week's start (Monday 00:00 UTC).
- browse_abandonment: signed-in shoppers who viewed products in the last `window_hours`, whose last view is at least
  `delay_hours` old (they left), and who added nothing to the cart nor bought in that window; once per day of their
  last view ("2026-12-06"). Their newest viewed products are the anchors (the similar placement fills from them).
- cart_abandonment: shoppers whose cart (their adds since their last purchase, less what they removed since, within
  `window_hours`) is not empty and untouched for `delay_hours`; once per day of their last add. The cart is the
  anchors, newest first.
- back_in_stock / price_drop: a product the shopper viewed or favourited in the last `window_hours`, and not since,
  came back in stock / fell by at least `price_drop_percent` (catalog.note_product_changes records the change when
  the profile is written) in the last CHANGE_WINDOW, and is in stock now (and still that cheap); once per day of the
  newest such change. Those products are the anchors, newest change first.
- after_purchase: shoppers whose newest purchase is `days` days old (up to `window_hours` older: the catch-up for a
  missed run); once per day of that purchase. What they bought then is the anchors (bought_together sums their
  co-purchases; serving never offers what they bought).
- win_back: shoppers whose newest event (an e-mail's own impression is not a visit) is `days` days old (up to
  `window_hours` older); once per day of that last visit.

A new kind is a `Trigger` subclass here and a choice in Flow.Trigger: the sender only calls `candidates` and
`anchors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Max, Q, QuerySet
from django.utils.translation import gettext_noop

from recommendations.models import Event, Flow, ProductChange, ProductProfile
from recommendations.push import consent

IDS_PER_QUERY = 1000
CHANGE_WINDOW = timedelta(hours=48)  # a change this old still sets a flow off: a missed run, quiet hours, a best hour
INTEREST = ("view", "favorite")  # what says a shopper cares about a product that came back or got cheaper


@dataclass(frozen=True)
class Due:
    """One shopper due for a flow: their user id, the period, the products that set it off (newest first), and the
    language their e-mail is written in ("": LANGUAGE_CODE)."""

    user_id: str
    period: str
    anchors: tuple[str, ...] = ()
    language: str = ""


@dataclass(frozen=True)
class Candidate:
    """A shopper a trigger fires for: the period of the occasion and the moment it became due (UTC)."""

    user_id: str
    period: str
    since: datetime


def message_key(flow: Flow, user_id: str, period: str) -> str:
    """The idempotency key of the flow's e-mail to this shopper for this period (Message.key)."""
    return f"{flow.pk}:{user_id}:{period}"


def day(moment: datetime) -> str:
    """A period of one UTC day ("2026-12-06")."""
    return f"{moment.astimezone(UTC):%Y-%m-%d}"


def anchor_args(placement: str, anchors: tuple[str, ...]) -> dict[str, Any]:
    """What serving.recommend reads the anchors as: a cart for bought_together (their co-purchases, summed), the
    newest one's page for a product placement (similar), nothing for for_you (which leaves them out)."""
    if not anchors or placement == "for_you":
        return {}
    if placement == "bought_together":
        return {"cart": anchors}
    return {"product_id": anchors[0]}


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), IDS_PER_QUERY):
        yield items[start : start + IDS_PER_QUERY]


def _signed_in(events: QuerySet[Event]) -> QuerySet[Event]:
    return events.exclude(user_id="")


class Trigger:
    """What a kind of flow answers; the numbers it reads are the flow's (window_hours, delay_hours, days, ...)."""

    kind = ""
    default_subject = ""
    has_anchors = True  # whether products set it off (a product placement can fill from them)
    best_hour_default = False  # whether its e-mails wait for the shopper's best hour unless the flow says

    def candidates(self, flow: Flow, now: datetime) -> Iterator[Candidate]:
        """Every shopper the trigger fires for now, consent not yet asked."""
        raise NotImplementedError

    def anchors(self, flow: Flow, now: datetime, user_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """The products that set it off, per user (newest first); none for a schedule."""
        return {}

    def prices_before(self, now: datetime, product_ids: set[str]) -> dict[str, Decimal]:
        """What the products that set it off cost before (an e-mail shows it struck through); none by default."""
        return {}


class WeeklyPicks(Trigger):
    kind = Flow.Trigger.WEEKLY_PICKS
    default_subject = gettext_noop("Picked for you this week")
    has_anchors = False
    best_hour_default = True

    def candidates(self, flow: Flow, now: datetime) -> Iterator[Candidate]:
        utc = now.astimezone(UTC)
        year, week, weekday = utc.isocalendar()
        start = (utc - timedelta(days=weekday - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        period = f"{year}-W{week:02d}"
        for user_id in consent.audience():
            yield Candidate(user_id, period, start)


def _last_per_user(events: QuerySet[Event], left_by: datetime) -> list[tuple[str, datetime]]:
    """(user id, their newest of these events) for the signed-in shoppers whose newest is no later than `left_by`."""
    rows = (
        _signed_in(events)
        .values("user_id")
        .annotate(last=Max("occurred_at"))
        .filter(last__lte=left_by)
        .order_by("user_id")
        .values_list("user_id", "last")
    )
    return list(rows)


def _newest_products(events: QuerySet[Event], limit: int) -> dict[str, tuple[str, ...]]:
    """Each shopper's newest distinct products among these events, at most `limit`."""
    found: dict[str, list[str]] = {}
    for user_id, product_id in (
        events.exclude(product_id="").order_by("-occurred_at", "-pk").values_list("user_id", "product_id")
    ):
        mine = found.setdefault(user_id, [])
        if len(mine) < limit and product_id not in mine:
            mine.append(product_id)
    return {user_id: tuple(products) for user_id, products in found.items()}


class BrowseAbandonment(Trigger):
    kind = Flow.Trigger.BROWSE_ABANDONMENT
    default_subject = gettext_noop("Still thinking about {{ viewed.0.name }}?")
    MAX_ANCHORS = 3

    def _views(self, flow: Flow, now: datetime) -> tuple[datetime, datetime]:
        return now - timedelta(hours=flow.window_hours), now - timedelta(hours=flow.delay_hours)

    def candidates(self, flow: Flow, now: datetime) -> Iterator[Candidate]:
        since, left_by = self._views(flow, now)
        if left_by < since:  # the delay is longer than the window: nobody can qualify
            return
        views = Event.objects.filter(event_type="view", occurred_at__gte=since, occurred_at__lte=now).exclude(
            product_id=""
        )
        found = _last_per_user(views, left_by)
        for chunk in _chunks(found):
            carted = set(
                Event.objects.filter(
                    event_type__in=("add_to_cart", "purchase"),
                    occurred_at__gte=since,
                    user_id__in=[user_id for user_id, _ in chunk],
                ).values_list("user_id", flat=True)
            )
            for user_id, last in chunk:
                if user_id not in carted:
                    yield Candidate(user_id, day(last), last + timedelta(hours=flow.delay_hours))

    def anchors(self, flow: Flow, now: datetime, user_ids: list[str]) -> dict[str, tuple[str, ...]]:
        since, _ = self._views(flow, now)
        views = Event.objects.filter(
            event_type="view", occurred_at__gte=since, occurred_at__lte=now, user_id__in=user_ids
        )
        return _newest_products(views, self.MAX_ANCHORS)


class CartAbandonment(Trigger):
    kind = Flow.Trigger.CART_ABANDONMENT
    default_subject = gettext_noop("You left {{ viewed.0.name }} in your cart")
    MAX_ANCHORS = 6
    CART_EVENTS = ("add_to_cart", "remove_from_cart", "purchase")

    def _window(self, flow: Flow, now: datetime) -> tuple[datetime, datetime]:
        return now - timedelta(hours=flow.window_hours), now - timedelta(hours=flow.delay_hours)

    def carts(self, user_ids: Iterable[str], since: datetime, now: datetime) -> dict[str, list[tuple[str, datetime]]]:
        """Each shopper's cart from their events since `since`: a purchase empties it (a checkout buys the cart), a
        removal takes the product out; [(product id, when added)], newest add first. Empty carts are left out."""
        carts: dict[str, dict[str, datetime]] = {}
        for chunk in _chunks(list(user_ids)):
            rows = (
                Event.objects.filter(
                    event_type__in=self.CART_EVENTS, occurred_at__gte=since, occurred_at__lte=now, user_id__in=chunk
                )
                .order_by("occurred_at", "pk")
                .values_list("user_id", "event_type", "product_id", "occurred_at")
            )
            for user_id, event_type, product_id, at in rows:
                cart = carts.setdefault(user_id, {})
                if event_type == "purchase":
                    cart.clear()
                elif event_type == "remove_from_cart":
                    cart.pop(product_id, None)
                elif product_id:
                    cart.pop(product_id, None)  # re-added: it moves to the front
                    cart[product_id] = at
        return {
            user_id: sorted(cart.items(), key=lambda item: item[1], reverse=True)
            for user_id, cart in carts.items()
            if cart
        }

    def candidates(self, flow: Flow, now: datetime) -> Iterator[Candidate]:
        since, left_by = self._window(flow, now)
        if left_by < since:
            return
        touched = Event.objects.filter(
            event_type__in=("add_to_cart", "remove_from_cart"), occurred_at__gte=since, occurred_at__lte=now
        )
        # Their last add or removal is at least the delay old: they left the cart as it is.
        left = dict(_last_per_user(touched, left_by))
        carts = self.carts(left, since, now)
        for user_id in sorted(carts):
            last_add = carts[user_id][0][1]
            yield Candidate(user_id, day(last_add), left[user_id] + timedelta(hours=flow.delay_hours))

    def anchors(self, flow: Flow, now: datetime, user_ids: list[str]) -> dict[str, tuple[str, ...]]:
        since, _ = self._window(flow, now)
        carts = self.carts(user_ids, since, now)
        return {user_id: tuple(pid for pid, _ in cart[: self.MAX_ANCHORS]) for user_id, cart in carts.items()}


class _ProductChanged(Trigger):
    """A product the shopper viewed or favourited in the window, and not since it changed, changed (a ProductChange
    row of `change_kind` in the last CHANGE_WINDOW) and still is as the change left it."""

    change_kind = ""
    MAX_ANCHORS = 3

    def changed(self, flow: Flow, now: datetime) -> dict[str, datetime]:
        """{product id: its newest change} of the products that qualify now."""
        newest, highest = self._changes(now)
        if not newest:
            return {}
        now_profiles = ProductProfile.objects.filter(product_id__in=list(newest), active=True, in_stock=True)
        qualify = {}
        for product_id, price in now_profiles.values_list("product_id", "price"):
            if self.still_holds(flow, price, highest.get(product_id)):
                qualify[product_id] = newest[product_id]
        return qualify

    def _changes(
        self, now: datetime, product_ids: set[str] | None = None
    ) -> tuple[dict[str, datetime], dict[str, Decimal]]:
        """{product id: its newest change} and {product id: the dearest it was before a change} in the window."""
        rows = ProductChange.objects.filter(kind=self.change_kind, at__gte=now - CHANGE_WINDOW, at__lte=now)
        if product_ids is not None:
            rows = rows.filter(product_id__in=list(product_ids))
        newest: dict[str, datetime] = {}
        highest: dict[str, Decimal] = {}  # the dearest it was before a drop in the window: drops add up
        for product_id, at, old in rows.values_list("product_id", "at", "old"):
            if product_id not in newest or at > newest[product_id]:
                newest[product_id] = at
            if old is not None:
                highest[product_id] = max(old, highest.get(product_id, old))
        return newest, highest

    def still_holds(self, flow: Flow, price: Decimal | None, highest: Decimal | None) -> bool:
        return True

    def interested(
        self, flow: Flow, now: datetime, changed: dict[str, datetime], user_ids: list[str] | None = None
    ) -> dict[str, list[str]]:
        """{user id: the `changed` products they cared about before the change, newest change first}."""
        if not changed:
            return {}
        since = now - timedelta(hours=flow.window_hours)
        interest = _signed_in(
            Event.objects.filter(event_type__in=INTEREST, product_id__in=list(changed), occurred_at__gte=since)
        )
        bought = Event.objects.filter(event_type="purchase", product_id__in=list(changed), occurred_at__gte=since)
        if user_ids is not None:
            interest, bought = interest.filter(user_id__in=user_ids), bought.filter(user_id__in=user_ids)
        done = set(bought.values_list("user_id", "product_id"))
        found: dict[str, list[str]] = {}
        pairs = interest.values("user_id", "product_id").annotate(last=Max("occurred_at"))
        for row in pairs.values_list("user_id", "product_id", "last"):
            user_id, product_id, last = row
            # Seen since it changed: they know. Bought: nothing to tell them.
            if last < changed[product_id] and (user_id, product_id) not in done:
                found.setdefault(user_id, []).append(product_id)
        return {
            user_id: sorted(products, key=lambda p: (changed[p], p), reverse=True)
            for user_id, products in found.items()
        }

    def candidates(self, flow: Flow, now: datetime) -> Iterator[Candidate]:
        changed = self.changed(flow, now)
        for user_id, products in sorted(self.interested(flow, now, changed).items()):
            newest = changed[products[0]]
            yield Candidate(user_id, day(newest), newest)

    def anchors(self, flow: Flow, now: datetime, user_ids: list[str]) -> dict[str, tuple[str, ...]]:
        found = self.interested(flow, now, self.changed(flow, now), user_ids)
        return {user_id: tuple(products[: self.MAX_ANCHORS]) for user_id, products in found.items()}


class BackInStock(_ProductChanged):
    kind = Flow.Trigger.BACK_IN_STOCK
    default_subject = gettext_noop("{{ viewed.0.name }} is back in stock")
    change_kind = ProductChange.Kind.BACK_IN_STOCK


class PriceDrop(_ProductChanged):
    kind = Flow.Trigger.PRICE_DROP
    default_subject = gettext_noop("{{ viewed.0.name }} is now cheaper")
    change_kind = ProductChange.Kind.PRICE_DROP

    def prices_before(self, now: datetime, product_ids: set[str]) -> dict[str, Decimal]:
        """The dearest each was before its drops in the window: the price the shopper saw (and the drop is from)."""
        return self._changes(now, product_ids)[1] if product_ids else {}

    def still_holds(self, flow: Flow, price: Decimal | None, highest: Decimal | None) -> bool:
        """Its price now is at least `price_drop_percent` below the highest it had before a drop in the window."""
        if price is None or highest is None or highest <= 0:
            return False
        return (highest - price) * 100 >= highest * flow.price_drop_percent


class _SinceLast(Trigger):
    """Shoppers whose newest event of a kind is `days` days old, give or take the `window_hours` catch-up."""

    def _band(self, flow: Flow, now: datetime) -> tuple[datetime, datetime]:
        until = now - timedelta(days=flow.days)
        return until - timedelta(hours=flow.window_hours), until


class AfterPurchase(_SinceLast):
    kind = Flow.Trigger.AFTER_PURCHASE
    default_subject = gettext_noop("Goes well with your {{ viewed.0.name }}")
    MAX_ANCHORS = 4

    def candidates(self, flow: Flow, now: datetime) -> Iterator[Candidate]:
        start, until = self._band(flow, now)
        purchases = Event.objects.filter(event_type="purchase", occurred_at__gte=start, occurred_at__lte=now)
        for user_id, last in _last_per_user(purchases.exclude(product_id=""), until):
            yield Candidate(user_id, day(last), last + timedelta(days=flow.days))

    def anchors(self, flow: Flow, now: datetime, user_ids: list[str]) -> dict[str, tuple[str, ...]]:
        start, until = self._band(flow, now)
        purchases = Event.objects.filter(
            event_type="purchase", occurred_at__gte=start, occurred_at__lte=until, user_id__in=user_ids
        )
        return _newest_products(purchases, self.MAX_ANCHORS)


class WinBack(_SinceLast):
    kind = Flow.Trigger.WIN_BACK
    default_subject = gettext_noop("We have new picks for you")
    has_anchors = False

    @staticmethod
    def visits() -> QuerySet[Event]:
        """Every event of a shopper's own: an e-mail's impression (stored when it is sent) is not a visit."""
        return _signed_in(Event.objects.exclude(Q(event_type="impression") & Q(placement__startswith="email:")))

    def candidates(self, flow: Flow, now: datetime) -> Iterator[Candidate]:
        start, until = self._band(flow, now)
        band = self.visits().filter(occurred_at__gte=start, occurred_at__lte=until)
        found = list(
            band.values("user_id").annotate(last=Max("occurred_at")).order_by("user_id").values_list("user_id", "last")
        )
        for chunk in _chunks(found):
            back = set(
                self.visits()
                .filter(user_id__in=[user_id for user_id, _ in chunk], occurred_at__gt=until)
                .values_list("user_id", flat=True)
                .distinct()
            )
            for user_id, last in chunk:
                if user_id not in back:
                    yield Candidate(user_id, day(last), last + timedelta(days=flow.days))


TRIGGERS: dict[str, Trigger] = {
    t.kind: t
    for t in (
        WeeklyPicks(),
        BrowseAbandonment(),
        CartAbandonment(),
        BackInStock(),
        PriceDrop(),
        AfterPurchase(),
        WinBack(),
    )
}


def trigger_of(flow: Flow) -> Trigger:
    """The flow's trigger; raises KeyError for a kind this version does not know (a row from a newer one)."""
    return TRIGGERS[flow.trigger]


def uses_best_hour(flow: Flow) -> bool:
    """Whether the flow's e-mails wait for the shopper's best hour: the flow's choice, else its trigger's default."""
    if flow.best_hour is not None:
        return bool(flow.best_hour)
    trigger = TRIGGERS.get(flow.trigger)
    return trigger is not None and trigger.best_hour_default
