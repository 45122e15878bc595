"""The privacy endpoints for a shop's back end: `POST /api/privacy/erase/` and `POST /api/privacy/export/`.

Only a server holding the write key may call them (a browser, even a staff session, is refused: an access or erasure
request is the shop's to verify before it reaches us). Both take `{"user_ids": [...], "visitor_ids": [...]}`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import APIException, NotAuthenticated, ParseError, PermissionDenied
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from recommendations import privacy
from recommendations.api.authentication import WriteKeyAuthentication, has_write_key
from recommendations.api.schema import RETRY_AFTER, ApiSchema
from recommendations.api.serializers import (
    ApiErrorSerializer,
    ErasureResultSerializer,
    ExportDocumentSerializer,
    PrivacyRequestSerializer,
)
from recommendations.api.throttling import IngestKeyThrottle
from recommendations.api.validation import as_error_list
from recommendations.api.views import UNAVAILABLE_RETRY_SECONDS

logger = logging.getLogger(__name__)


class WriteKeyOnly(BasePermission):
    message = gettext_lazy("Only a server with the write key may make privacy requests.")

    def has_permission(self, request: Request, view: Any) -> bool:
        return has_write_key(request)


class _InvalidIds(APIException):
    status_code = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class PrivacyUnavailable(APIException):
    """The database cannot be reached: a 503 with Retry-After, so the shop's back end sends the request again (an
    erasure is idempotent, an export reads only), rather than a 500 that reads as a bug."""

    status_code = 503
    default_detail = gettext_lazy("Privacy requests cannot be handled right now; please send the request again later.")
    default_code = "unavailable"
    wait = UNAVAILABLE_RETRY_SECONDS


_ERRORS = {
    400: OpenApiResponse(
        ApiErrorSerializer,
        description="The body is not JSON or not an object, a field is unknown or not a list of ids, or no one is "
        "named; errors[].field names the part at fault.",
    ),
    403: OpenApiResponse(ApiErrorSerializer, description="No write key, or a wrong one."),
    415: OpenApiResponse(ApiErrorSerializer, description="The body is not application/json."),
    429: OpenApiResponse(ApiErrorSerializer, description="Throttled; the Retry-After header says when to try again."),
    503: OpenApiResponse(
        ApiErrorSerializer,
        description="The database cannot be reached; the Retry-After header says when to send the request again.",
    ),
}


class _PrivacyView(APIView):
    authentication_classes = [WriteKeyAuthentication]
    permission_classes = [WriteKeyOnly]
    throttle_classes = [IngestKeyThrottle]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    schema = ApiSchema()

    def ids(self, request: Request) -> tuple[Any, Any]:
        body = request.data
        if not isinstance(body, dict):
            raise ParseError(_('The body must be a JSON object: {"user_ids": [...], "visitor_ids": [...]}.'))
        unknown = sorted(set(body) - {"user_ids", "visitor_ids"})
        if unknown:
            raise _InvalidIds(unknown[0], _("unknown field; send user_ids and visitor_ids"))
        for name in ("user_ids", "visitor_ids"):
            # A JSON object is iterable too (its keys), so `clean_ids` alone would read {"a": 1} as ["a"].
            if body.get(name) is not None and not isinstance(body[name], list):
                raise _InvalidIds(name, _("must be a list of ids"))
        return body.get("user_ids"), body.get("visitor_ids")

    def handle_exception(self, exc: Exception) -> Response:
        """Refusals as `{"errors": [{"field", "message"}], "detail"}`, like the app's other endpoints."""
        if isinstance(exc, privacy.InvalidSubjects):
            exc = _InvalidIds(exc.field, exc.message)
        if isinstance(exc, NotAuthenticated):
            exc = PermissionDenied(WriteKeyOnly.message)
        if isinstance(exc, OperationalError | InterfaceError):
            logger.warning("privacy request: the database cannot be reached: %s", exc)
            exc = PrivacyUnavailable()
        return as_error_list(super().handle_exception(exc), exc)


class EraseView(_PrivacyView):
    """Erase every event, stored list and cache key of the shoppers named; answers the counts."""

    @extend_schema(
        operation_id="privacy_erase",
        summary="Erase shoppers' data",
        description=(
            "Deletes every event (impressions and clicks included), stored list and cache key of the users and "
            "visitors named, and of the visitors merged into those users at login. Idempotent. Answers "
            '`{"erasure": <audit row id>, "counts": {...}}`. Retrain afterwards so the next model never saw them.'
        ),
        request=PrivacyRequestSerializer,
        responses={200: OpenApiResponse(ErasureResultSerializer, description="What was deleted."), **_ERRORS},
        parameters=[RETRY_AFTER],
        tags=["privacy"],
    )
    def post(self, request: Request) -> Response:
        user_ids, visitor_ids = self.ids(request)
        record = privacy.erase(user_ids, visitor_ids, requested_by="api (write key)", via="api")
        return Response({"erasure": record.pk, "counts": record.counts})


class ExportView(_PrivacyView):
    """Every event and stored list of the shoppers named, as one JSON document (docs/privacy.md)."""

    @extend_schema(
        operation_id="privacy_export",
        summary="Export shoppers' data",
        description="One JSON document with every event and stored list of the shoppers named (docs/privacy.md).",
        request=PrivacyRequestSerializer,
        responses={200: OpenApiResponse(ExportDocumentSerializer, description="The export document."), **_ERRORS},
        parameters=[RETRY_AFTER],
        tags=["privacy"],
    )
    def post(self, request: Request) -> Response:
        user_ids, visitor_ids = self.ids(request)
        return Response(privacy.export(user_ids, visitor_ids))
