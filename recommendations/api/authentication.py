"""Who is posting events: a server holding the write key, or a shopper's browser (session or visitor cookie).

Why the browser path skips DRF's CSRF check, and why that is safe
-----------------------------------------------------------------
The JS tracker sends with `navigator.sendBeacon`, which cannot set headers, so it cannot carry a CSRF token;
DRF's `SessionAuthentication` would reject every beacon from a logged-in shopper. `BeaconSessionAuthentication`
therefore reads the session user without enforcing CSRF, and the ingest view closes the hole CSRF protection
guards against (another site making the shopper's browser post events as them) in two other ways:

1. The view accepts only `Content-Type: application/json`. A cross-site HTML form can only send
   `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`; any other content type from
   another origin needs a CORS preflight, and we never answer one with permission.
2. `SameOriginBrowser` rejects (403) a browser request whose `Origin` header is present and is not this site
   (scheme + host, or an exact entry of CSRF_TRUSTED_ORIGINS), as Django's own CSRF origin check does. Browsers
   send `Origin` on every POST, beacons included.

The worst a forged request could do is add tracking events for the victim, which is also the most an honest
page could do; it can never read anything back.
"""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext as _
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from recommendations.conf import rec_settings


class ServerWriteKey:
    """`request.auth` of a request that presented the write key: it may write any shopper's events."""

    def __repr__(self) -> str:
        return "<ServerWriteKey>"


SERVER_WRITE_KEY = ServerWriteKey()


def has_write_key(request: Request) -> bool:
    return request.auth is SERVER_WRITE_KEY


class WriteKeyAuthentication(BaseAuthentication):
    """Server-to-server writes: the header named by WRITE_KEY_HEADER must equal the configured WRITE_KEY.

    A request that sends the header with a wrong value (or to a site with no key configured) is refused with 403
    rather than treated as a browser, so a misconfigured integration fails loudly.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        supplied = request.headers.get(rec_settings.WRITE_KEY_HEADER)
        if supplied is None:
            return None
        expected = rec_settings.WRITE_KEY or ""
        if not expected or not hmac.compare_digest(supplied.encode(), expected.encode()):
            raise AuthenticationFailed(_("Invalid write key."))
        return AnonymousUser(), SERVER_WRITE_KEY


class BeaconSessionAuthentication(BaseAuthentication):
    """The logged-in shopper from Django's session, without CSRF enforcement (see the module docstring)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        user = getattr(request._request, "user", None)
        if user is None or not user.is_active:
            return None
        return user, None


def request_origin(request: Request) -> str:
    return f"{request.scheme}://{request.get_host()}"


class SameOriginBrowser(BasePermission):
    """Browser requests must come from this site's own pages; server requests carry no Origin worth checking."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if has_write_key(request):
            return True
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        trusted = {request_origin(request), *getattr(settings, "CSRF_TRUSTED_ORIGINS", [])}
        if origin not in trusted:
            # Raised here rather than returning False: DRF would turn False into "not authenticated" for anonymous
            # shoppers, which hides the reason.
            raise PermissionDenied(_("Origin %(origin)r may not send events to this site.") % {"origin": origin})
        return True
