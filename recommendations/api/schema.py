"""How the app's own authentication classes appear in the OpenAPI schema (drf-spectacular extensions).

drf-spectacular knows DRF's built-in classes only; without these it warns and leaves the endpoints without a
security scheme. Imported by `views.py`, so the extensions are registered before any schema is generated.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension

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
