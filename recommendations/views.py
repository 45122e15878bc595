"""The consent view: where the banner's and the account switch's forms post the shopper's answer (and a page's
script may ask for the current one). A plain Django view, so the CSRF middleware guards it: a forged answer, a
"yes" above all, must not be possible from another site."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from recommendations import privacy, tracking

YES = frozenset({"1", "true", "yes", "on", "granted"})
NO = frozenset({"0", "false", "no", "off", "denied"})


def _answer(consent: tracking.Consent) -> dict[str, object]:
    return {"personalised": consent.personalised, "source": consent.source, "asked": consent.asked}


@never_cache
@require_http_methods(["GET", "POST"])
def consent(request: HttpRequest) -> HttpResponse:
    """GET: the current answer as JSON. POST `personalised=1|0` (and `next`): record it; redirects to `next` when
    that is a page of this site, else answers JSON. A bad value is a 400 naming the field."""
    if request.method == "GET":
        return JsonResponse(_answer(tracking.consent_of(request)))
    raw = (request.POST.get("personalised") or "").strip().lower()
    if raw not in YES | NO:
        message = _('"personalised" must be 1 (yes) or 0 (no).')
        return JsonResponse({"errors": [{"field": "personalised", "message": message}], "detail": message}, status=400)
    target = request.POST.get("next") or ""
    safe = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    response: HttpResponse = HttpResponseRedirect(target) if target and safe else JsonResponse({})
    answer = privacy.set_consent(request, response, raw in YES)
    if isinstance(response, JsonResponse):
        response.content = json.dumps(_answer(answer)).encode()
    return response
