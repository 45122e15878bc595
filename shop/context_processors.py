"""Values every shop page needs: the category menu and the cart badge."""

from typing import Any

from django.http import HttpRequest

from shop.cart import Cart
from shop.models import Category


def shop(request: HttpRequest) -> dict[str, Any]:
    # Lazy: pages that never show the menu (the admin, JSON views) never run the query.
    return {
        "menu_categories": Category.objects.all(),
        "cart_count": len(Cart(request)) if hasattr(request, "session") else 0,
    }
