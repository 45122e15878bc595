"""Values every shop page needs (category menu, cart count)."""

from typing import Any

from django.http import HttpRequest


def shop(request: HttpRequest) -> dict[str, Any]:
    return {}
