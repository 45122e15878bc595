"""`health/` and `metrics/`: the system's health as JSON and the app's Prometheus metrics, with no middleware to add.

Who sees what: a staff session, or a request with `Authorization: Bearer <RECOMMENDATIONS["METRICS_TOKEN"]>` (a
monitoring system), gets the detailed health report (each check, 200 when all pass, 503 naming those that fail) and
the metrics. Anyone else gets from `health/` only the liveness answer, `{"status": "ok"}`, without running a check:
a load balancer's probe costs nothing, cannot be used to load the database or the broker, and learns nothing about
the inside; `metrics/` answers them 403. A bearer token rather than an IP allow-list, because behind a proxy every
request comes from the proxy's address.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from recommendations import health as checks
from recommendations import metrics
from recommendations.conf import rec_settings


def may_see_details(request: HttpRequest) -> bool:
    """A bearer token equal to METRICS_TOKEN, or a staff session. Without a session cookie the session is never
    read, so the liveness answer needs no database."""
    token = rec_settings.METRICS_TOKEN
    kind, _space, given = request.headers.get("Authorization", "").partition(" ")
    if token and kind.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False
    try:
        user = getattr(request, "user", None)
        return bool(user is not None and user.is_active and user.is_staff)
    except DatabaseError:  # the session store is down: no details, but still an answer
        return False


@never_cache
@require_safe
def health_view(request: HttpRequest) -> JsonResponse:
    """Liveness for anyone; for staff and the token, every check and 200 or 503."""
    if not may_see_details(request):
        return JsonResponse({"status": "ok"})
    report = checks.run_checks()
    return JsonResponse(report.as_json(), status=200 if report.ok else 503)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition (text, or OpenMetrics when the scraper asks), with the health checks as gauges."""
    if not may_see_details(request):
        return JsonResponse({"detail": _("Metrics need a staff session or the metrics token.")}, status=403)
    report = checks.run_checks()
    body, content_type = metrics.exposition(request.headers.get("Accept", ""), [checks.ReportCollector(report)])
    return HttpResponse(body, content_type=content_type)
