"""Whether the shopper behind a request may be tracked and get personal recommendations.

The answer comes from the callable the `CONSENT_CHECK` setting names (a dotted path; it takes the request and returns
a bool or a `Consent`), asked once per request. The app's own, `default_consent`, reads in this order:

1. a signed-in shopper's own choice, kept by the app under a keyed hash of their user id (the account switch);
2. the consent cookie (`CONSENT_COOKIE_NAME`: "granted" or "denied"), set by the banner or by the host's own
   consent manager;
3. the browser's Global Privacy Control header (`Sec-GPC: 1`): no;
4. otherwise `CONSENT_REQUIRED`: True (the default) means nobody is tracked before they say yes, as the GDPR,
   ePrivacy and PIPL ask; a shop where the law allows opt-out sets it to False.

Without consent the app stores no event and no impression, sets no cookie of its own and deletes its visitor cookie,
and every block is built as for an unknown visitor (trending, similar, best sellers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.utils.crypto import salted_hmac
from django.utils.module_loading import import_string

from recommendations.conf import rec_settings
from recommendations.models import ConsentChoice

logger = logging.getLogger(__name__)

# The request VisitorMiddleware is handling, for code a signal calls without it (Oscar's search and order signals):
# whose consent applies there.
_current_request: ContextVar[HttpRequest | None] = ContextVar("recommendations_request", default=None)


def current_request() -> HttpRequest | None:
    """The request being handled in this thread or task (set by VisitorMiddleware), or None outside one."""
    return _current_request.get()


GRANTED = "granted"
DENIED = "denied"
CONSENT_ATTR = "_recommendations_consent"
HASH_SALT = "recommendations.consent"


@dataclass(frozen=True)
class Consent:
    """The answer for one request: may we track and personalise, and what said so."""

    personalised: bool
    # "account" (the signed-in shopper's stored choice), "cookie", "gpc", "default" (nobody has said anything yet),
    # or whatever a host's own check names.
    source: str = "default"

    @property
    def asked(self) -> bool:
        """Whether the shopper (or their browser) has answered; the banner shows only while they have not."""
        return self.source != "default"


def choice_subject(user_id: str | int) -> str:
    """The keyed hash a signed-in shopper's choice is kept under: the table never names anyone, and an erasure can
    keep an opt-out (the one thing a shopper who said no wants remembered) without keeping their id."""
    return salted_hmac(HASH_SALT, f"user:{user_id}", algorithm="sha256").hexdigest()


def stored_choice(user_id: str | int) -> bool | None:
    """The signed-in shopper's own answer, or None if they never gave one on their account."""
    if user_id in (None, ""):
        return None
    return ConsentChoice.objects.filter(subject=choice_subject(user_id)).values_list("personalised", flat=True).first()


def has_opt_outs() -> bool:
    """Whether any signed-in shopper said no: most shops' bulk writes skip hashing every user id."""
    return ConsentChoice.objects.filter(personalised=False).exists()


def opted_out_users(user_ids: Iterable[str]) -> set[str]:
    """Which of these users said no on their account: events a server sends for them are dropped too."""
    wanted = {str(u) for u in user_ids if u}
    if not wanted or not has_opt_outs():
        return set()
    by_subject = {choice_subject(u): u for u in wanted}
    denied = ConsentChoice.objects.filter(subject__in=list(by_subject), personalised=False)
    return {by_subject[s] for s in denied.values_list("subject", flat=True)}


def cookie_choice(request: HttpRequest) -> bool | None:
    value = request.COOKIES.get(rec_settings.CONSENT_COOKIE_NAME, "")
    return {GRANTED: True, DENIED: False}.get(value)


def default_consent(request: HttpRequest) -> Consent:
    """The app's consent check (see the module's docstring for the order)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        choice = stored_choice(user.pk)
        if choice is not None:
            return Consent(choice, "account")
    choice = cookie_choice(request)
    if choice is not None:
        return Consent(choice, "cookie")
    if request.headers.get("Sec-GPC", "").strip() == "1":
        return Consent(False, "gpc")
    return Consent(not rec_settings.CONSENT_REQUIRED, "default")


def _check() -> Callable[[HttpRequest], Any]:
    path = rec_settings.CONSENT_CHECK
    return path if callable(path) else import_string(path)


def consent_of(request: HttpRequest | None) -> Consent:
    """This request's answer, asked once and kept on the request. A check that fails says no: tracking someone who
    may have refused is worse than missing one visit."""
    if request is None:
        return Consent(True, "server")
    known = request.__dict__.get(CONSENT_ATTR)
    if known is not None:
        return known
    try:
        answer = _check()(request)
        consent = answer if isinstance(answer, Consent) else Consent(bool(answer), "custom")
    except Exception:
        logger.exception("the consent check %r failed; this request is not tracked", rec_settings.CONSENT_CHECK)
        consent = Consent(False, "error")
    request.__dict__[CONSENT_ATTR] = consent
    return consent


def may_track(request: HttpRequest | None) -> bool:
    """Whether events of this request's shopper may be stored and their recommendations personalised."""
    return consent_of(request).personalised


def remember_consent(request: HttpRequest, consent: Consent) -> None:
    """What the rest of this request (the middleware on the way out, blocks rendered after) must go by, after the
    shopper answered during it."""
    request.__dict__[CONSENT_ATTR] = consent


def forget_consent(request: HttpRequest) -> None:
    """Ask again on the next question: the shopper behind the request changed (a login)."""
    request.__dict__.pop(CONSENT_ATTR, None)
