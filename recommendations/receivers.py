"""Receivers: product profiles in step with the host catalog, visitors linked at login, deleted users forgotten,
and the app's own signals (`recommendations.signals`) acted on by the layer that owns the reaction.

Everything here is wired when the app is ready (apps.py): the model signals of the host's product and user models
by `connect_*`, the rest when this module is imported.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from recommendations import catalog, privacy, serving, signals, tasks, tracking
from recommendations.conf import rec_settings
from recommendations.lists import store
from recommendations.push import consent as push_consent

logger = logging.getLogger(__name__)


def _on_product_saved(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:  # loaddata: the fixture's own profiles (if any) are authoritative
        return
    transaction.on_commit(lambda: _safe(catalog.sync_product, instance))


def _on_product_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # The id now: once the delete has run, Django has set the instance's pk to None.
    product_id = catalog.product_id_of(instance)
    transaction.on_commit(lambda: _safe(catalog.deactivate_product, product_id))


def _safe(func: Any, instance: Any) -> None:
    # A profile that lags one save is harmless; a product save that fails because of us is not.
    try:
        func(instance)
    except Exception:
        logger.exception("product profile sync failed for %r", instance)


def connect_product_signals() -> None:
    if not rec_settings.PRODUCT_MODEL:
        return
    try:
        model = catalog.get_product_model()
    except (LookupError, ValueError):
        return  # reported by the system check
    post_save.connect(_on_product_saved, sender=model, dispatch_uid="recommendations_product_saved")
    post_delete.connect(_on_product_deleted, sender=model, dispatch_uid="recommendations_product_deleted")


def connect_user_signals() -> None:
    """Deleting a user (settings.AUTH_USER_MODEL) deletes what the app keeps about them (see privacy/erasure.py)."""
    post_delete.connect(
        privacy.on_user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="recommendations_user_deleted"
    )
    post_delete.connect(
        privacy.forget_deleted_user_choice,
        sender=settings.AUTH_USER_MODEL,
        dispatch_uid="recommendations_user_deleted_choice",
    )
    post_delete.connect(
        push_consent.forget_deleted_user,
        sender=settings.AUTH_USER_MODEL,
        dispatch_uid="recommendations_user_deleted_email",
    )


def _on_profile_written(sender: Any, instance: Any, **kwargs: Any) -> None:
    catalog.profiles_changed([instance.product_id])


post_save.connect(_on_profile_written, sender="recommendations.ProductProfile", dispatch_uid="recommendations_profile")
post_delete.connect(
    _on_profile_written, sender="recommendations.ProductProfile", dispatch_uid="recommendations_profile"
)
user_logged_in.connect(tracking.on_user_logged_in, dispatch_uid="recommendations_merge_visitor")


def _on_model_activated(sender: Any, run_id: int, **kwargs: Any) -> None:
    # Inside the activating transaction: the precompute is sent when it commits, so the worker sees the model serving.
    tasks.enqueue_precompute()


def _on_set_activated(sender: Any, set_id: int, **kwargs: Any) -> None:
    store.forget_active_set()


def _on_events_stored(sender: Any, shoppers: list[str], tasted: list[str], **kwargs: Any) -> None:
    serving.touch_shoppers(shoppers)
    tasks.schedule_refresh(tasted)


signals.model_activated.connect(_on_model_activated, dispatch_uid="recommendations_model_activated")
signals.set_activated.connect(_on_set_activated, dispatch_uid="recommendations_set_activated")
signals.events_stored.connect(_on_events_stored, dispatch_uid="recommendations_events_stored")
