"""Who is shopping: the visitor cookie, the user id, the shopper key built from both, the visit's campaign cookie,
and the merge of a visitor's anonymous events into the user who logs in."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from django.http import HttpRequest, HttpResponse

from recommendations import signals
from recommendations.conf import rec_settings
from recommendations.models import Event, shopper_key
from recommendations.tracking.consent import forget_consent, may_track

logger = logging.getLogger(__name__)


VISITOR_ATTR = "recommendations_visitor_id"


# The visit's utm_campaign, kept for later pages so cold-start rules (tunables/rules.py) can match on it.
CAMPAIGN_COOKIE = "rec_campaign"


CAMPAIGN_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def new_visitor_id() -> str:
    return secrets.token_hex(16)


def valid_visitor_id(value: str | None) -> bool:
    return bool(value) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def get_visitor_id(request: HttpRequest) -> str:
    """The visitor id of this browser; assigns one (set as a cookie on the way out) if it has none. Without the
    shopper's consent there is none: "" (and the middleware deletes the cookie)."""
    visitor_id = getattr(request, VISITOR_ATTR, None)
    if visitor_id:
        return visitor_id
    if not may_track(request):
        return ""
    cookie = request.COOKIES.get(rec_settings.VISITOR_COOKIE_NAME)
    visitor_id = cookie if valid_visitor_id(cookie) else new_visitor_id()
    setattr(request, VISITOR_ATTR, visitor_id)
    return visitor_id


def get_user_id(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return str(user.pk)
    return ""


def get_shopper(request: HttpRequest) -> str:
    """The engine's key for whoever is making this request; "" (an unknown visitor) without their consent."""
    if not may_track(request):
        return ""
    return shopper_key(get_user_id(request), get_visitor_id(request))


def forget_visitor(request: HttpRequest) -> None:
    """This request has no visitor id from now on (the shopper just refused): the middleware deletes the cookie."""
    request.__dict__.pop(VISITOR_ATTR, None)


def remember_campaign(request: HttpRequest, response: HttpResponse) -> None:
    """Keep the visit's utm_campaign in a session cookie, so cold-start rules see it on later pages too."""
    campaign = request.GET.get("utm_campaign", "")
    if (
        campaign
        and may_track(request)
        and CAMPAIGN_PATTERN.match(campaign)
        and request.COOKIES.get(CAMPAIGN_COOKIE) != campaign
    ):
        response.set_cookie(CAMPAIGN_COOKIE, campaign, httponly=True, samesite="Lax")


def merge_visitor(visitor_id: str, user_id: str) -> int:
    """Link a visitor's anonymous events to the user who just logged in; returns how many moved."""
    if not (visitor_id and user_id):
        return 0
    return Event.objects.filter(visitor_id=visitor_id, user_id="").update(
        user_id=str(user_id), shopper=shopper_key(str(user_id), visitor_id)
    )


def on_user_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if request is None:
        return
    # Who is asking just changed: their own stored choice may say otherwise than this browser's cookie.
    forget_consent(request)
    if not may_track(request):
        forget_visitor(request)
        return
    try:
        if merge_visitor(get_visitor_id(request), str(user.pk)):
            shopper = shopper_key(str(user.pk), "")
            signals.events_stored.send(sender=Event, shoppers=[shopper], tasted=[shopper])
    except Exception:
        logger.exception("could not merge visitor events at login")
