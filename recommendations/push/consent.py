"""May a shopper get marketing e-mail, and at which address; their unsubscribes and flow preferences.

RECOMMENDATIONS["EMAIL_CONSENT"] names a callable (user) -> bool. The app's own, `stored_email_consent`, reads the
shopper's EmailConsent row: only an explicit opt-in (`set_email_consent(user_id, True)`) lets e-mail go out. A host
that keeps the answer elsewhere (a newsletter field on its user model) names its own callable; an unsubscribe
through the app's link is still kept in EmailConsent and wins over the host's answer until the shopper opts in again
(through `set_email_consent`), so a one-click unsubscribe takes effect at once whatever the host stores.
RECOMMENDATIONS["EMAIL_ADDRESS"] names (user) -> str, the address (default: the user model's e-mail field).

A shopper who left a flow (the preference page) gets none of its e-mails, whoever answers the question above. A
consent callable that raises says no: mailing someone who may have refused is worse than missing one e-mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.module_loading import import_string

from recommendations.conf import DEFAULTS, rec_settings
from recommendations.models import EmailConsent, Message

logger = logging.getLogger(__name__)

AUDIENCE_CHUNK = 2000  # user ids read per query when the audience is walked


def stored_email_consent(user: Any) -> bool:
    """The app's own EMAIL_CONSENT: the shopper opted in on their EmailConsent row."""
    return EmailConsent.objects.filter(user_id=str(user.pk), opted_in=True).exists()


def user_email(user: Any) -> str:
    """The app's own EMAIL_ADDRESS: the user model's e-mail field."""
    field = user.get_email_field_name() if hasattr(user, "get_email_field_name") else "email"
    return str(getattr(user, field, "") or "")


def _callable(key: str) -> Callable[[Any], Any]:
    path = getattr(rec_settings, key)
    return path if callable(path) else import_string(path)


def _own_consent() -> bool:
    """Whether EMAIL_CONSENT is the app's own: then the rows answer in bulk, without loading users."""
    return rec_settings.EMAIL_CONSENT in (DEFAULTS["EMAIL_CONSENT"], stored_email_consent)


def load_users(user_ids: Iterable[str]) -> dict[str, Any]:
    """The host's user objects by id (as text); ids that are not users' are absent."""
    model = get_user_model()
    keys = []
    for user_id in dict.fromkeys(str(u) for u in user_ids):
        try:
            keys.append(model._meta.pk.to_python(user_id))
        except Exception:  # noqa: S112 - an id from events that is not this user model's key
            continue
    return {str(user.pk): user for user in model._default_manager.filter(pk__in=keys)} if keys else {}


def audience() -> Iterator[str]:
    """Every user who may be asked about at all, in chunks: those who opted in (the app's consent), or every active
    user (a host's callable decides per user)."""
    if _own_consent():
        rows = EmailConsent.objects.filter(opted_in=True).order_by("user_id").values_list("user_id", flat=True)
        yield from rows.iterator(chunk_size=AUDIENCE_CHUNK)
        return
    model = get_user_model()
    users = model._default_manager.order_by("pk")
    if any(f.name == "is_active" for f in model._meta.concrete_fields):
        users = users.filter(is_active=True)
    for pk in users.values_list("pk", flat=True).iterator(chunk_size=AUDIENCE_CHUNK):
        yield str(pk)


def consenting(user_ids: Iterable[str], flow: str, users: dict[str, Any] | None = None) -> set[str]:
    """Which of these users may get e-mail of flow `flow` (its slug) now. `users` (from load_users), when the
    caller has them, saves loading them again for a host's callable."""
    ids = list(dict.fromkeys(str(u) for u in user_ids))
    if not ids:
        return set()
    rows = {row.user_id: row for row in EmailConsent.objects.filter(user_id__in=ids)}
    left = {u for u, row in rows.items() if flow in (row.unsubscribed_flows or [])}
    if _own_consent():
        return {u for u in ids if u in rows and rows[u].opted_in and u not in left}
    refused = {u for u, row in rows.items() if not row.opted_in and row.opted_out_at is not None}
    users = users if users is not None else load_users(ids)
    check = _callable("EMAIL_CONSENT")
    allowed = set()
    for user_id in ids:
        user = users.get(user_id)
        if user is None or user_id in refused or user_id in left or not getattr(user, "is_active", True):
            continue
        try:
            if check(user):
                allowed.add(user_id)
        except Exception:
            logger.exception("the e-mail consent check %r failed; no e-mail to them", rec_settings.EMAIL_CONSENT)
    return allowed


def may_email(user_id: str, flow: str) -> bool:
    """One shopper's answer, read afresh (the last look before an e-mail goes out)."""
    return str(user_id) in consenting([str(user_id)], flow)


def addresses(users: dict[str, Any]) -> dict[str, str]:
    """{user id: address} for the users that have one (EMAIL_ADDRESS)."""
    address_of = _callable("EMAIL_ADDRESS")
    found = {}
    for user_id, user in users.items():
        try:
            address = str(address_of(user) or "").strip()
        except Exception:
            logger.exception("the e-mail address callable %r failed", rec_settings.EMAIL_ADDRESS)
            address = ""
        if address:
            found[user_id] = address
    return found


def set_email_consent(user_id: str | int, opted_in: bool, *, via: str = "") -> EmailConsent:
    """Record a shopper's answer (the host's sign-up or account form calls this; the unsubscribe link too).

    Opting in again keeps the flows they left one by one; opting out stops every flow at once.
    """
    now = timezone.now()
    row, _ = EmailConsent.objects.get_or_create(user_id=str(user_id))
    row.opted_in = opted_in
    if opted_in:
        row.opted_in_at = now
    else:
        row.opted_out_at, row.opted_out_via = now, via[:34]
    row.save()
    logger.info("a shopper %s marketing e-mail%s", "allowed" if opted_in else "refused", f" (via {via})" if via else "")
    return row


def set_flow_choices(user_id: str, wanted: Iterable[str], offered: Iterable[str]) -> EmailConsent:
    """The preference page: of the flows `offered`, the shopper wants `wanted`. Wanting any is an opt-in (they asked
    from their own inbox); flows not offered keep their earlier choice."""
    wanted, offered = set(wanted) & set(offered), set(offered)
    row, _ = EmailConsent.objects.get_or_create(user_id=str(user_id))
    kept = set(row.unsubscribed_flows or []) - offered
    row.unsubscribed_flows = sorted(kept | (offered - wanted))
    if wanted and not row.opted_in:
        row.opted_in, row.opted_in_at = True, timezone.now()
    row.save()
    return row


def preferences(user_id: str) -> tuple[bool, set[str]]:
    """(may they get marketing e-mail at all, the slugs of the flows they left), for the preference page."""
    row = EmailConsent.objects.filter(user_id=str(user_id)).first()
    left = set(row.unsubscribed_flows or []) if row is not None else set()
    if _own_consent():
        return bool(row and row.opted_in), left
    if row is not None and not row.opted_in and row.opted_out_at is not None:
        return False, left
    user = load_users([str(user_id)]).get(str(user_id))
    try:
        return bool(user is not None and _callable("EMAIL_CONSENT")(user)), left
    except Exception:
        logger.exception("the e-mail consent check %r failed", rec_settings.EMAIL_CONSENT)
        return False, left


def forget_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_delete of the user model: their e-mail consent and the record of the e-mails they got go with them."""
    if instance.pk is None:
        return
    user_id = str(instance.pk)
    EmailConsent.objects.filter(user_id=user_id).delete()
    Message.objects.filter(user_id=user_id).delete()
