"""What the app keeps about one person, and forgetting it when the host deletes their account.

A stop-gap until the privacy work (export, consent, retention) lands: when a Django user is deleted, their events
(under their user id, and under every visitor id that was merged into them at login), their stored lists in every
recommendation set (for_you, experiment arms' "for_you@run<id>", anything else keyed by them), and their cached
blocks go too, so nothing personal of theirs is served again. Experiment arms are a hash of the shopper key, not a
stored assignment, so there is nothing else to delete. Trained models may still hold a vector for them until the
next retrain; no list is built from it without their events.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from recommendations.models import Event, StoredList, shopper_key

logger = logging.getLogger(__name__)


def shoppers_of_user(user_id: str) -> set[str]:
    """Every shopper key the app may file this user's data under: theirs and their merged visitors'."""
    user_id = str(user_id)
    visitors = (
        Event.objects.filter(user_id=user_id).exclude(visitor_id="").values_list("visitor_id", flat=True).distinct()
    )
    return {shopper_key(user_id, ""), *(shopper_key("", visitor) for visitor in visitors)}


def erase_user(user_id: str) -> dict[str, int]:
    """Delete the events and stored lists of a user (and their merged visitors) and make their cached blocks stale.

    Runs in the caller's transaction, so it stands or falls with the user's own deletion; returns what was deleted.
    """
    from recommendations.serving import touch_shoppers

    user_id = str(user_id)
    shoppers = shoppers_of_user(user_id)
    visitors = [s.removeprefix("v:") for s in shoppers if s.startswith("v:")]
    with transaction.atomic():
        events = Event.objects.filter(user_id=user_id).delete()[0]
        events += Event.objects.filter(shopper__in=shoppers).delete()[0]
        if visitors:
            events += Event.objects.filter(visitor_id__in=visitors).delete()[0]
        lists = StoredList.objects.filter(subject__in=shoppers).delete()[0]

    def stale() -> None:
        # A cached block carries the shopper's version in its key: a new version is never served an old block.
        touch_shoppers(shoppers)

    stale()
    transaction.on_commit(stale)  # again after commit: a page between the two could have cached the old lists
    logger.info("erased user %s: %d events, %d stored lists, %d shopper keys", user_id, events, lists, len(shoppers))
    return {"events": events, "lists": lists, "shoppers": len(shoppers)}


def on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_delete of the user model: forget them. A failure is logged, never turned into a failed deletion."""
    user_id = instance.pk  # still set: Django clears it only after every post_delete receiver ran
    if user_id is None:
        return
    try:
        erase_user(str(user_id))
    except Exception:
        logger.exception("could not erase the recommendation data of deleted user %s", user_id)
