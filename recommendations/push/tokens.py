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

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.encoding import force_bytes

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


class _Signer(signing.TimestampSigner):
    """Django's TimestampSigner, with the HMAC key it derives from the salt and the secret kept: Django derives it
    again for every token (two hashes and a new HMAC), and an e-mail carries nine. Its tokens are Django's own,
    byte for byte, so `signing.loads` reads them (tests/push/test_links.py compares the two)."""

    def __init__(self, salt: str) -> None:
        super().__init__(salt=salt, algorithm="sha256")
        self._macs: dict[bytes, Any] = {}
        self._stamp: tuple[int, str] = (-1, "")

    def timestamp(self) -> str:
        now = int(time.time())  # the same second as Django's, written in base 62 once a second, not once a token
        second, stamp = self._stamp  # one tuple: a thread never sees one second's number with another's text
        if now != second:
            stamp = signing.b62_encode(now)
            self._stamp = (now, stamp)
        return stamp

    def signature(self, value: str, key: Any = None) -> str:
        secret = force_bytes(key or self.key)
        mac = self._macs.get(secret)
        if mac is None:  # what django.utils.crypto.salted_hmac derives: the hash of the salt and the secret
            derived = hashlib.sha256(force_bytes(self.salt + "signer") + secret).digest()
            mac = self._macs[secret] = hmac.new(derived, digestmod=hashlib.sha256)
        mac = mac.copy()
        mac.update(force_bytes(value))
        return signing.b64_encode(mac.digest()).decode()


def _signer(salt: str) -> _Signer:
    """One signer per salt and secret (a test or a key rotation changes SECRET_KEY: a new signer then)."""
    key = (salt, str(settings.SECRET_KEY))
    signer = _signers.get(key)
    if signer is None:
        signer = _signers[key] = _Signer(salt)
    return signer


_signers: dict[tuple[str, str], _Signer] = {}


def click_token(click: Click) -> str:
    """The token of a click link: the recommendation id and the product only, never the shopper."""
    return _signer(CLICK_SALT).sign_object({"r": click.recommendation_id, "p": click.product_id})


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
    return _signer(UNSUBSCRIBE_SALT).sign_object({"m": recommendation_id})


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
_paths: dict[tuple[str, Any, str, str], tuple[str, str]] = {}


def _around_token(name: str) -> tuple[str, str]:
    """The path of URL `name` before and after its token: reversed once per URL conf, not per link (a token's
    characters, URL-safe base64 and ':', are never quoted, so putting it between the two is the same)."""
    key = (name, get_urlconf(), str(settings.ROOT_URLCONF), get_script_prefix())
    parts = _paths.get(key)
    if parts is None:
        before, _slot, after = reverse(name, args=[_SLOT]).partition(_SLOT)
        parts = _paths[key] = (before, after)
    return parts


class Links:
    """The links of one e-mail: the site and the paths looked up once for all of them (an e-mail has nine links, and
    each lookup reads the URL conf, the script prefix and the settings)."""

    def __init__(self) -> None:
        site = absolute("")
        click = _around_token("recommendations:email_click")
        unsubscribe = _around_token("recommendations:email_unsubscribe")
        self._click = (site + click[0], click[1])
        self._unsubscribe = (site + unsubscribe[0], unsubscribe[1])

    def click(self, click: Click) -> str:
        return f"{self._click[0]}{click_token(click)}{self._click[1]}"

    def unsubscribe(self, recommendation_id: str) -> str:
        return f"{self._unsubscribe[0]}{unsubscribe_token(recommendation_id)}{self._unsubscribe[1]}"


def click_url(click: Click) -> str:
    return Links().click(click)


def unsubscribe_url(recommendation_id: str) -> str:
    return Links().unsubscribe(recommendation_id)
