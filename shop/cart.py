"""The shopping cart: product ids and quantities kept in the session, priced from the catalog on every read.

Only ids and quantities are stored, never prices, so a price change or a deactivated product is reflected
the next time the cart is shown, and the session stays small and JSON-serialisable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from django.http import HttpRequest

from shop.models import Product

SESSION_KEY = "cart"
MAX_LINE_QUANTITY = 99


@dataclass
class CartLine:
    product: Product
    quantity: int

    @property
    def line_total(self) -> Decimal:
        return self.product.price * self.quantity


class Cart:
    """A view onto the session's cart; every change marks the session modified so it is saved."""

    def __init__(self, request: HttpRequest) -> None:
        self.session = request.session
        raw = self.session.get(SESSION_KEY)
        self._items: dict[str, int] = {}
        if isinstance(raw, dict):
            # A tampered or stale session must not break the cart page: keep only sane entries.
            for key, quantity in raw.items():
                if str(key).isdigit() and isinstance(quantity, int) and quantity > 0:
                    self._items[str(key)] = quantity

    def _save(self) -> None:
        self.session[SESSION_KEY] = dict(self._items)
        self.session.modified = True

    def quantity_of(self, product: Product) -> int:
        return self._items.get(str(product.pk), 0)

    def add(self, product: Product, quantity: int) -> None:
        """Add to the line's quantity; callers check stock first (see AddToCartForm)."""
        key = str(product.pk)
        self._items[key] = min(self._items.get(key, 0) + quantity, MAX_LINE_QUANTITY)
        self._save()

    def remove(self, product: Product) -> int:
        """Drop the whole line; returns how many units were in it (0 if none)."""
        removed = self._items.pop(str(product.pk), 0)
        if removed:
            self._save()
        return removed

    def clear(self) -> None:
        self._items = {}
        self.session.pop(SESSION_KEY, None)
        self.session.modified = True

    def lines(self) -> list[CartLine]:
        """The cart's lines with current products; products that vanished or were withdrawn are dropped."""
        if not self._items:
            return []
        products = Product.objects.filter(pk__in=[int(k) for k in self._items], is_active=True).select_related(
            "category", "brand"
        )
        by_id = {str(p.pk): p for p in products}
        return [CartLine(by_id[key], qty) for key, qty in self._items.items() if key in by_id]

    def __iter__(self) -> Iterator[CartLine]:
        return iter(self.lines())

    def __len__(self) -> int:
        """Number of units in the cart (what the header badge shows); no database query."""
        return sum(self._items.values())

    def __bool__(self) -> bool:
        return bool(self._items)

    @staticmethod
    def total_of(lines: list[CartLine]) -> Decimal:
        return sum((line.line_total for line in lines), Decimal("0"))
