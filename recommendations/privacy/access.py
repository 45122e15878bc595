"""A shopper's access request: `export(user_ids=..., visitor_ids=...)` gives one JSON-ready document with every
event and stored list the app keeps about them (the format is in docs/privacy.md; `FORMAT` and `VERSION` name it)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from recommendations.models import ConsentChoice, EmailConsent, Event, Message, StoredList
from recommendations.privacy.subjects import resolve
from recommendations.tracking.consent import choice_subject

FORMAT = "django-recommendations/shopper-export"
VERSION = 1
EVENT_FIELDS = (
    "event_id",
    "event_type",
    "occurred_at",
    "received_at",
    "client_time",
    "user_id",
    "visitor_id",
    "shopper",
    "product_id",
    "quantity",
    "value",
    "query",
    "placement",
    "recommendation_id",
    "variant",
    "context",
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def export(user_ids: Iterable[str | int] | None = None, visitor_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """Everything stored about these shoppers, oldest event first; raises InvalidSubjects on bad ids.

    The same shoppers as `erase` would remove: the users, the visitors named and the visitors merged into the users.
    """
    subjects = resolve(user_ids, visitor_ids)
    mine = subjects.events_filter()
    events = [
        {name: _plain(value) for name, value in zip(EVENT_FIELDS, row, strict=True)}
        for row in Event.objects.filter(mine).order_by("occurred_at", "pk").values_list(*EVENT_FIELDS).iterator()
    ]
    lists = [
        {
            "recommendation_set": set_id,
            "set_status": status,
            "placement": placement,
            "subject": subject,
            "items": [
                {"product_id": i[0], "score": i[1] if len(i) > 1 else None, "reason": i[2] if len(i) > 2 else ""}
                for i in items
            ],
        }
        for set_id, status, placement, subject, items in StoredList.objects.filter(subject__in=subjects.shoppers)
        .order_by("recommendation_set_id", "placement", "subject")
        .values_list("recommendation_set_id", "recommendation_set__status", "placement", "subject", "items")
    ]
    messages = [
        {
            "flow": slug,
            "period": period,
            "status": status,
            "subject": subject,
            "products": products,
            "recommendation_id": recommendation_id,
            "created_at": _plain(created),
            "sent_at": _plain(sent),
        }
        for slug, period, status, subject, products, recommendation_id, created, sent in Message.objects.filter(
            user_id__in=subjects.user_ids
        )
        .order_by("created_at", "pk")
        .values_list(
            "flow__slug", "period", "status", "subject", "products", "recommendation_id", "created_at", "sent_at"
        )
    ]
    consents = [
        {
            "user_id": user_id,
            "opted_in": opted_in,
            "opted_in_at": _plain(opted_in_at),
            "opted_out_at": _plain(opted_out_at),
            "unsubscribed_flows": unsubscribed,
        }
        for user_id, opted_in, opted_in_at, opted_out_at, unsubscribed in EmailConsent.objects.filter(
            user_id__in=subjects.user_ids
        )
        .order_by("user_id")
        .values_list("user_id", "opted_in", "opted_in_at", "opted_out_at", "unsubscribed_flows")
    ]
    users_by_subject = {choice_subject(user_id): user_id for user_id in subjects.user_ids}
    answers = dict(
        ConsentChoice.objects.filter(subject__in=list(users_by_subject)).values_list("subject", "personalised")
    )
    personalised = {user_id: answers.get(subject) for subject, user_id in users_by_subject.items()}
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": timezone.now().isoformat(),
        "subjects": {
            "user_ids": subjects.user_ids,
            "visitor_ids": subjects.visitor_ids,
            "linked_visitor_ids": subjects.linked_visitor_ids,
            "shoppers": subjects.shoppers,
        },
        "counts": {
            "events": len(events),
            "stored_lists": len(lists),
            "email_messages": len(messages),
            "email_consents": len(consents),
        },
        "events": events,
        "stored_lists": lists,
        "email_messages": messages,
        "email_consents": consents,
        # Each user's answer to "may the shop personalise for me" on their account (None: never given there).
        "personalisation_choices": personalised,
    }
