"""What drf-spectacular cannot work out alone about the API: the app's authentication classes, the hand-written
field schemas of `serializers.py`, and the views' AutoSchema (request bodies required, empty query values).

drf-spectacular knows DRF's built-in classes only; without these it warns and leaves the endpoints without a
security scheme. Imported by `views.py`, so the extensions are registered before any schema is generated.
"""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter

from recommendations.conf import rec_settings


class WriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "recommendations.api.authentication.WriteKeyAuthentication"
    name = "writeKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": rec_settings.WRITE_KEY_HEADER,
            "description": "The server-side write key (RECOMMENDATIONS['WRITE_KEY']); never put it in a browser.",
        }


class BeaconSessionScheme(OpenApiAuthenticationExtension):
    """Django's session cookie, under the name drf-spectacular gives DRF's own SessionAuthentication."""

    target_class = "recommendations.api.authentication.BeaconSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


class SchemaFieldExtension(OpenApiSerializerFieldExtension):
    """`serializers.SchemaField`: its schema is written out by hand, as the server reads the value."""

    target_class = "recommendations.api.serializers.SchemaField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return copy.deepcopy(self.target.json_schema)


class PrivacyRequestScheme(OpenApiSerializerExtension):
    """The privacy request: at least one of the two lists names someone, and nothing else is sent."""

    target_class = "recommendations.api.serializers.PrivacyRequestSerializer"

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target_class, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        schema["anyOf"] = [
            {"required": [name], "properties": {name: {"type": "array", "minItems": 1}}}
            for name in ("user_ids", "visitor_ids")
        ]
        return schema


class ApiSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus what its decorators cannot say about these views.

    - A request body is required: without one the answer is a 400 (or 415), never a success.
    - With `empty_means_absent`, a query parameter sent empty (`?limit=`) is read as not given
      (`allowEmptyValue`), as `views.read_query` does.
    """

    empty_means_absent = False

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True
        if self.empty_means_absent:
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    parameter["allowEmptyValue"] = True
        return operation


class BlockSchema(ApiSchema):
    empty_means_absent = True


# The header every 429 and 503 carries (DRF sets it from the exception's `wait`).
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    {"type": "string", "pattern": r"^[0-9]+$"},
    OpenApiParameter.HEADER,
    response=[429, 503],
    description="Seconds to wait before sending again.",
)
