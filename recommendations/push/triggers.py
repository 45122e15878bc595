"""Each kind of trigger: who is due for a flow now, for which period (the period is part of the message's
idempotency key: one e-mail per flow, shopper and period, ever), and which products set it off.

- weekly_picks: everyone in the e-mail audience (push.consent.audience), once per ISO week ("2026-W49").
- browse_abandonment: signed-in shoppers who viewed products in the last `window_hours`, whose last view is at least
  `delay_hours` old (they left), and who added nothing to the cart nor bought in that window; once per day of their
  last view ("2026-12-06"). Their newest viewed products are the anchors (the similar placement fills from them).

A new kind is a `Trigger` subclass here and a choice in Flow.Trigger: the sender only calls `candidates` and
`anchors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Max
from django.utils.translation import gettext_noop

from recommendations.models import Event, Flow
from recommendations.push import consent

IDS_PER_QUERY = 1000


@dataclass(frozen=True)
class Due:
    """One shopper due for a flow: their user id, the period, and the products that set it off (newest first)."""

    user_id: str
    period: str
    anchors: tuple[str, ...] = ()


def message_key(flow: Flow, user_id: str, period: str) -> str:
    """The idempotency key of the flow's e-mail to this shopper for this period (Message.key)."""
    return f"{flow.pk}:{user_id}:{period}"


class Trigger:
    """What a kind of flow answers; the numbers it reads are the flow's (window_hours, delay_hours)."""

    kind = ""
    default_subject = ""

    def candidates(self, flow: Flow, now: datetime) -> Iterator[tuple[str, str]]:
        """(user id, period) of every shopper the trigger fires for now, consent not yet asked."""
        raise NotImplementedError

    def anchors(self, flow: Flow, now: datetime, user_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """The products that set it off, per user (newest first); none for a schedule."""
        return {}


class WeeklyPicks(Trigger):
    kind = Flow.Trigger.WEEKLY_PICKS
    default_subject = gettext_noop("Picked for you this week")

    def candidates(self, flow: Flow, now: datetime) -> Iterator[tuple[str, str]]:
        year, week, _ = now.astimezone(UTC).isocalendar()
        period = f"{year}-W{week:02d}"
        for user_id in consent.audience():
            yield user_id, period


class BrowseAbandonment(Trigger):
    kind = Flow.Trigger.BROWSE_ABANDONMENT
    default_subject = gettext_noop("Still thinking about {{ viewed.0.name }}?")
    MAX_ANCHORS = 3

    def _views(self, flow: Flow, now: datetime) -> tuple[datetime, datetime]:
        return now - timedelta(hours=flow.window_hours), now - timedelta(hours=flow.delay_hours)

    def candidates(self, flow: Flow, now: datetime) -> Iterator[tuple[str, str]]:
        since, left_by = self._views(flow, now)
        if left_by < since:  # the delay is longer than the window: nobody can qualify
            return
        lasts = (
            Event.objects.filter(event_type="view", occurred_at__gte=since, occurred_at__lte=now)
            .exclude(user_id="")
            .exclude(product_id="")
            .values("user_id")
            .annotate(last=Max("occurred_at"))
            .filter(last__lte=left_by)
            .order_by("user_id")
            .values_list("user_id", "last")
        )
        found = list(lasts)
        for start in range(0, len(found), IDS_PER_QUERY):
            chunk = found[start : start + IDS_PER_QUERY]
            carted = set(
                Event.objects.filter(
                    event_type__in=("add_to_cart", "purchase"),
                    occurred_at__gte=since,
                    user_id__in=[user_id for user_id, _ in chunk],
                ).values_list("user_id", flat=True)
            )
            for user_id, last in chunk:
                if user_id not in carted:
                    yield user_id, f"{last.astimezone(UTC):%Y-%m-%d}"

    def anchors(self, flow: Flow, now: datetime, user_ids: list[str]) -> dict[str, tuple[str, ...]]:
        since, _ = self._views(flow, now)
        found: dict[str, list[str]] = {}
        views = (
            Event.objects.filter(event_type="view", occurred_at__gte=since, occurred_at__lte=now, user_id__in=user_ids)
            .exclude(product_id="")
            .order_by("-occurred_at", "-pk")
            .values_list("user_id", "product_id")
        )
        for user_id, product_id in views:
            mine = found.setdefault(user_id, [])
            if len(mine) < self.MAX_ANCHORS and product_id not in mine:
                mine.append(product_id)
        return {user_id: tuple(products) for user_id, products in found.items()}


TRIGGERS: dict[str, Trigger] = {t.kind: t for t in (WeeklyPicks(), BrowseAbandonment())}


def trigger_of(flow: Flow) -> Trigger:
    """The flow's trigger; raises KeyError for a kind this version does not know (a row from a newer one)."""
    return TRIGGERS[flow.trigger]
