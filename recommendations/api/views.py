"""The ingest endpoint: batches of events from the JS tracker and from server-side integrations.

A batch is checked event by event; valid events are stored even when others in the batch are not. The work per
request is fixed whatever the batch size: one query for known products, one INSERT for the events.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from recommendations import catalog, tracking
from recommendations.api.authentication import (
    BeaconSessionAuthentication,
    SameOriginBrowser,
    WriteKeyAuthentication,
    has_write_key,
)
from recommendations.api.throttling import IngestKeyThrottle, IngestThrottle
from recommendations.api.validation import Identity, validate_event
from recommendations.conf import rec_settings
from recommendations.tracking import get_visitor_id


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


def refusal(exc_class: type[APIException], field: str, message: str) -> APIException:
    """An exception for a whole-batch problem that names the part of the request at fault."""
    exc = exc_class(message)
    exc.field = field  # type: ignore[attr-defined]
    return exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def batch_result(
    accepted: int = 0,
    duplicates: int = 0,
    errors: list[dict[str, Any]] | None = None,
    unknown_products: list[str] | None = None,
) -> dict[str, Any]:
    """The one answer shape of this endpoint, for successes and failures alike."""
    return {
        "accepted": accepted,
        "duplicates": duplicates,
        "errors": errors or [],
        "unknown_products": unknown_products or [],
    }


class EventIngestView(APIView):
    """`POST {"events": [...]}`: store a batch of shopper events.

    Answers `{"accepted", "duplicates", "errors": [{"index", "field", "message"}], "unknown_products"}`:
    200 when at least one event was valid (a replay of already stored events included), 400 when none was or the
    body is not a batch, 413 over INGEST_MAX_BYTES or INGEST_MAX_EVENTS, 415 for a body that is not
    application/json, 403 for a wrong write key or a foreign Origin, 429 with Retry-After when throttled.
    See `recommendations.api.authentication` for why browsers need no CSRF token here.
    """

    authentication_classes = [WriteKeyAuthentication, BeaconSessionAuthentication]
    permission_classes = [SameOriginBrowser]
    throttle_classes = [IngestThrottle, IngestKeyThrottle]
    renderer_classes = [JSONRenderer]
    parser_classes: list[Any] = []  # the body is read and limited by `read_batch`, never by DRF's parsers

    def post(self, request: Request) -> Response:
        raw_events = self.read_batch(request)
        identity = self.identity(request)
        now = timezone.now()
        valid = []
        errors: list[dict[str, Any]] = []
        for index, raw in enumerate(raw_events):
            event, problems = validate_event(raw, index, identity, now)
            if event is None:
                errors.extend(problems)
            else:
                valid.append(event)
        if not valid:
            return Response(batch_result(errors=errors), status=status.HTTP_400_BAD_REQUEST)

        product_ids = list(dict.fromkeys(e.product_id for e in valid if e.product_id))
        known = catalog.known_product_ids(product_ids)
        tracking.attribute(valid)
        stored = tracking.insert_events(valid)
        if stored:
            tracking.on_events_stored(stored)
        return Response(
            batch_result(
                accepted=len(stored),
                duplicates=len(valid) - len(stored),
                errors=errors,
                unknown_products=[pid for pid in product_ids if pid not in known],
            )
        )

    def read_batch(self, request: Request) -> list[Any]:
        """The list under "events", after the content type and both size limits are checked, in that order."""
        django_request = request._request
        if django_request.content_type != "application/json":
            raise UnsupportedMediaType(django_request.content_type or "(none)")
        max_bytes = rec_settings.INGEST_MAX_BYTES
        try:
            declared = int(django_request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise refusal(ParseError, "body", "Content-Length is not a number.") from None
        if declared > max_bytes:
            raise refusal(PayloadTooLarge, "body", f"The body is {declared} bytes; at most {max_bytes} are accepted.")
        body = django_request.body
        if len(body) > max_bytes:
            raise refusal(PayloadTooLarge, "body", f"The body is {len(body)} bytes; at most {max_bytes} are accepted.")
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise refusal(ParseError, "body", f"The body is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            raise refusal(ParseError, "events", 'The body must be a JSON object with an "events" list.')
        events = data["events"]
        if not events:
            raise refusal(ParseError, "events", 'The "events" list is empty.')
        max_events = rec_settings.INGEST_MAX_EVENTS
        if len(events) > max_events:
            raise refusal(
                PayloadTooLarge, "events", f"The batch has {len(events)} events; at most {max_events} are accepted."
            )
        return events

    def identity(self, request: Request) -> Identity:
        if has_write_key(request):
            return Identity(trusted=True)
        user = request.user
        user_id = str(user.pk) if user is not None and user.is_authenticated else ""
        return Identity(trusted=False, user_id=user_id, visitor_id=get_visitor_id(request._request))

    def handle_exception(self, exc: Exception) -> Response:
        """Give refusals (400, 403, 413, 415, 429) the same shape as a batch answer, keeping DRF's `detail`."""
        response = super().handle_exception(exc)
        detail = response.data.get("detail") if isinstance(response.data, dict) else None
        if detail is not None:
            response.data = {
                **batch_result(errors=[{"index": None, "field": getattr(exc, "field", None), "message": str(detail)}]),
                "detail": detail,
            }
        return response
