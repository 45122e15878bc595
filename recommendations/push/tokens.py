"""The signed tokens in an e-mail's links, and the links: a click (/e/c/<token>/) names the e-mail (its
recommendation id, unique per message) and the product; an unsubscribe (/e/u/<token>/) names the e-mail.

Signed with django.core.signing (SECRET_KEY, a salt per kind, a timestamp read against a maximum age), so a link
cannot be altered and a click link stops counting after EMAIL_CLICK_MAX_AGE_DAYS. Signed is not encrypted: anyone
can read a token's payload (base64), and a link is forwarded, pasted and logged. So a token names no shopper: the
link's view looks the message up by its recommendation id (a random uuid) to learn the shopper and the flow.

Tokens of the first format (until 2026-12) named the shopper ("u") and the flow ("f"); e-mails that carry them are
still in inboxes, so they are read as before until they expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.urls import get_script_prefix, get_urlconf, reverse

from recommendations.conf import rec_settings

CLICK_SALT = "recommendations.push.click"
UNSUBSCRIBE_SALT = "recommendations.push.unsubscribe"
DAY = 24 * 3600

BadToken = signing.BadSignature
ExpiredToken = signing.SignatureExpired


@dataclass(frozen=True)
class Click:
    """A click link: the e-mail's recommendation id and the product. `user_id` and `flow` are set only by a token
    of the first format, which carried them; for the current one the view reads them from the message."""

    recommendation_id: str
    product_id: str
    user_id: str = ""
    flow: str = ""


@dataclass(frozen=True)
class Unsubscribe:
    """An unsubscribe link: the e-mail's recommendation id, or (first format) the shopper and the flow."""

    recommendation_id: str = ""
    user_id: str = ""
    flow: str = ""


def _text(data: dict, key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str | int):
        raise TypeError(key)
    return str(value)


def click_token(click: Click) -> str:
    """The token of a click link: the recommendation id and the product only, never the shopper."""
    return signing.dumps({"r": click.recommendation_id, "p": click.product_id}, salt=CLICK_SALT)


def read_click(token: str, *, expired_ok: bool = False) -> Click:
    """The click a token names; raises BadToken when it was altered, ExpiredToken (a BadToken) when too old,
    unless `expired_ok`."""
    max_age = None if expired_ok else float(rec_settings.EMAIL_CLICK_MAX_AGE_DAYS) * DAY
    data = signing.loads(token, salt=CLICK_SALT, max_age=max_age)
    try:
        click = Click(_text(data, "r"), _text(data, "p"), _text(data, "u"), _text(data, "f"))
    except (AttributeError, TypeError) as exc:
        raise BadToken("not a click token") from exc
    if not click.recommendation_id or not click.product_id:
        raise BadToken("not a click token")
    return click


def unsubscribe_token(recommendation_id: str) -> str:
    """The token of an unsubscribe link: the e-mail's recommendation id only."""
    return signing.dumps({"m": recommendation_id}, salt=UNSUBSCRIBE_SALT)


def read_unsubscribe(token: str, *, expired_ok: bool = False) -> Unsubscribe:
    """The e-mail (or, first format, the shopper and flow) an unsubscribe token names; raises BadToken or
    ExpiredToken as read_click does."""
    max_age = None if expired_ok else float(rec_settings.EMAIL_UNSUBSCRIBE_MAX_AGE_DAYS) * DAY
    data = signing.loads(token, salt=UNSUBSCRIBE_SALT, max_age=max_age)
    try:
        found = Unsubscribe(_text(data, "m"), _text(data, "u"), _text(data, "f"))
    except (AttributeError, TypeError) as exc:
        raise BadToken("not an unsubscribe token") from exc
    if not found.recommendation_id and not (found.user_id and found.flow):
        raise BadToken("not an unsubscribe token")
    return found


def absolute(path: str) -> str:
    """`path` on the site as shoppers reach it (SITE_URL); an e-mail has no request to build it from."""
    return str(rec_settings.SITE_URL).rstrip("/") + path


_SLOT = "0slot0"
_paths: dict[tuple[str, Any, str, str], str] = {}


def _link(name: str, token: str) -> str:
    """The link of URL `name` with `token`: reversed once per URL conf, not per link (an e-mail has nine; a token's
    characters, URL-safe base64 and ':', are never quoted, so putting it in the reversed path is the same)."""
    key = (name, get_urlconf(), str(settings.ROOT_URLCONF), get_script_prefix())
    path = _paths.get(key)
    if path is None:
        path = _paths[key] = reverse(name, args=[_SLOT])
    return absolute(path.replace(_SLOT, token, 1))


def click_url(click: Click) -> str:
    return _link("recommendations:email_click", click_token(click))


def unsubscribe_url(recommendation_id: str) -> str:
    return _link("recommendations:email_unsubscribe", unsubscribe_token(recommendation_id))
