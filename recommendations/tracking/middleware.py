"""The middleware a host adds (`recommendations.tracking.VisitorMiddleware`): the visitor cookie and campaign on the
way out, and the impressions and after-response tasks run once the response is closed."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from recommendations.conf import rec_settings
from recommendations.tracking.consent import _current_request
from recommendations.tracking.identity import get_visitor_id, remember_campaign
from recommendations.tracking.impressions import AFTER_RESPONSE_ATTR, finish_on_close


class VisitorMiddleware:
    """Gives every consenting browser a stable, random visitor id cookie so anonymous behaviour can be learnt from
    (and takes it back from one that refused)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.__dict__[AFTER_RESPONSE_ATTR] = []
        token = _current_request.set(request)
        try:
            response = self.get_response(request)
        finally:
            _current_request.reset(token)
        finish_on_close(request, response)
        remember_campaign(request, response)
        # Read after the view: a shopper who answered the consent question on this request is taken at their word.
        visitor_id = get_visitor_id(request)
        name = rec_settings.VISITOR_COOKIE_NAME
        if not visitor_id:
            if name in request.COOKIES:  # no consent (any more): the id goes with it
                response.delete_cookie(name, samesite="Lax")
        elif request.COOKIES.get(name) != visitor_id:
            from django.conf import settings

            response.set_cookie(
                name,
                visitor_id,
                max_age=rec_settings.VISITOR_COOKIE_AGE,
                httponly=True,
                samesite="Lax",
                secure=getattr(settings, "RECOMMENDATIONS_VISITOR_COOKIE_SECURE", False),
            )
        return response
