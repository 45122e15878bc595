"""A shopper's answer to "may the shop learn from what I do": `set_consent` records it (the consent cookie, their
account's choice when signed in) and takes effect on the same request; a refusal can also erase what was kept.

Whether a request may be tracked is read by `tracking.consent`; this module only writes the answer.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from recommendations.conf import rec_settings
from recommendations.models import ConsentChoice
from recommendations.privacy.erasure import erase
from recommendations.tracking import forget_visitor, valid_visitor_id
from recommendations.tracking.consent import DENIED, GRANTED, Consent, choice_subject, remember_consent

logger = logging.getLogger(__name__)


def set_consent(
    request: HttpRequest, response: HttpResponse, personalised: bool, *, erase_history: bool | None = None
) -> Consent:
    """Record the shopper's answer and let the rest of this request go by it.

    A refusal stops tracking at once: no event or impression is stored from this request on, the visitor cookie is
    deleted on the way out (VisitorMiddleware), and blocks are built as for an unknown visitor. With
    `erase_history` (default: the ERASE_ON_OPT_OUT setting) it also erases their events, lists and cached blocks.
    """
    user = getattr(request, "user", None)
    user_id = str(user.pk) if user is not None and user.is_authenticated else ""
    visitor = request.COOKIES.get(rec_settings.VISITOR_COOKIE_NAME, "")
    if user_id:
        set_account_choice(user_id, personalised)
    response.set_cookie(
        rec_settings.CONSENT_COOKIE_NAME,
        GRANTED if personalised else DENIED,
        max_age=rec_settings.CONSENT_COOKIE_AGE,
        samesite="Lax",
        secure=request.is_secure() or getattr(settings, "RECOMMENDATIONS_VISITOR_COOKIE_SECURE", False),
        httponly=False,  # a page's script (the tracker, the host's banner) may read the answer, never an id
    )
    consent = Consent(personalised, "account" if user_id else "cookie")
    remember_consent(request, consent)
    if not personalised:
        forget_visitor(request)
        if rec_settings.ERASE_ON_OPT_OUT if erase_history is None else erase_history:
            erase(
                [user_id] if user_id else None,
                [visitor] if valid_visitor_id(visitor) else None,
                requested_by="shopper",
                via="opt_out",
            )
    logger.info("a shopper %s personalisation (%s)", "allowed" if personalised else "refused", consent.source)
    return consent


def set_account_choice(user_id: str | int, personalised: bool) -> None:
    """Keep a signed-in shopper's answer on their account (for a host whose own account page or import already
    asked them); it then holds on every device, before any cookie."""
    ConsentChoice.objects.update_or_create(
        subject=choice_subject(user_id), defaults={"personalised": personalised, "changed_at": timezone.now()}
    )


def forget_deleted_user_choice(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_delete of the user model: a deleted account's choice goes with it (an erasure alone keeps it)."""
    if instance.pk is not None:
        ConsentChoice.objects.filter(subject=choice_subject(instance.pk)).delete()
