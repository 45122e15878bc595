"""The signed tokens in an e-mail's links, and the links: a click (/e/c/<token>/) names the shopper, the flow, the
message's recommendation id and the product; an unsubscribe (/e/u/<token>/) names the shopper and the flow.

Signed with django.core.signing (SECRET_KEY, a salt per kind, a timestamp read against a maximum age), so a link
carries everything it needs without a lookup, cannot be altered, and a click link stops counting after
EMAIL_CLICK_MAX_AGE_DAYS.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core import signing
from django.urls import reverse

from recommendations.conf import rec_settings

CLICK_SALT = "recommendations.push.click"
UNSUBSCRIBE_SALT = "recommendations.push.unsubscribe"
DAY = 24 * 3600

BadToken = signing.BadSignature
ExpiredToken = signing.SignatureExpired


@dataclass(frozen=True)
class Click:
    user_id: str
    flow: str
    recommendation_id: str
    product_id: str


@dataclass(frozen=True)
class Unsubscribe:
    user_id: str
    flow: str


def click_token(click: Click) -> str:
    return signing.dumps(
        {"u": click.user_id, "f": click.flow, "r": click.recommendation_id, "p": click.product_id},
        salt=CLICK_SALT,
        compress=True,
    )


def read_click(token: str, *, expired_ok: bool = False) -> Click:
    """The click a token names; raises BadToken when it was altered, ExpiredToken (a BadToken) when too old,
    unless `expired_ok`."""
    max_age = None if expired_ok else float(rec_settings.EMAIL_CLICK_MAX_AGE_DAYS) * DAY
    data = signing.loads(token, salt=CLICK_SALT, max_age=max_age)
    try:
        return Click(str(data["u"]), str(data["f"]), str(data["r"]), str(data["p"]))
    except (KeyError, TypeError) as exc:
        raise BadToken("not a click token") from exc


def unsubscribe_token(user_id: str, flow: str) -> str:
    return signing.dumps({"u": user_id, "f": flow}, salt=UNSUBSCRIBE_SALT, compress=True)


def read_unsubscribe(token: str, *, expired_ok: bool = False) -> Unsubscribe:
    """The shopper and flow an unsubscribe token names; raises BadToken or ExpiredToken as read_click does."""
    max_age = None if expired_ok else float(rec_settings.EMAIL_UNSUBSCRIBE_MAX_AGE_DAYS) * DAY
    data = signing.loads(token, salt=UNSUBSCRIBE_SALT, max_age=max_age)
    try:
        return Unsubscribe(str(data["u"]), str(data["f"]))
    except (KeyError, TypeError) as exc:
        raise BadToken("not an unsubscribe token") from exc


def absolute(path: str) -> str:
    """`path` on the site as shoppers reach it (SITE_URL); an e-mail has no request to build it from."""
    return str(rec_settings.SITE_URL).rstrip("/") + path


def click_url(click: Click) -> str:
    return absolute(reverse("recommendations:email_click", args=[click_token(click)]))


def unsubscribe_url(user_id: str, flow: str) -> str:
    return absolute(reverse("recommendations:email_unsubscribe", args=[unsubscribe_token(user_id, flow)]))
