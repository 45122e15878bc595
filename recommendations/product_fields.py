"""What a host may put in RECOMMENDATIONS["PRODUCT_FIELDS"] besides a plain lookup, and the product adapter.

Multi-valued product data is normal (several categories, offers, stock records), and a plain ORM lookup across a
to-many relation gives one row per related object. So a key may also name a Django aggregate (`Min("offers__price")`),
`Values(...)` (the values of a to-many lookup, first / last / all), or a callable `f(product)`; a shop whose values
need code names a `ProductAdapter` subclass in RECOMMENDATIONS["PRODUCT_ADAPTER"]. `catalog` reads them.

A host imports this module from its settings.py, before the app registry is ready: it imports no models, and what it
needs from the app it imports inside the functions that run later.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

PICKS = ("first", "last", "all")
# The profile keys that can hold more than one value: category (also kept whole in `categories`) and text (joined).
MULTI_VALUED_KEYS = ("category", "text")


class Values:
    """The values of a to-many lookup per product, ordered by `order_by` (default: the lookup's own value).

    `order_by` is an ORM ordering relative to the product model ("-categories__depth": the deepest category first).
    pick="first" / "last" keeps one value; pick="all" keeps every distinct value, in that order (category: the
    first is the profile's category and the profile's `categories` holds them all; text: joined with spaces).
    """

    def __init__(self, lookup: str, pick: str = "first", order_by: str | None = None) -> None:
        self.lookup = lookup
        self.pick = pick
        self.order_by = order_by

    def ordering(self) -> list[str]:
        """The ORDER BY of the read: `order_by`, then the value itself, so ties come out the same every time."""
        return [self.order_by, self.lookup] if self.order_by else [self.lookup]

    def choose(self, values: list[Any]) -> Any:
        """One product's ordered values -> what the profile keeps (None when it has none, a list for pick="all")."""
        if self.pick == "all":
            return list(dict.fromkeys(values))
        if not values:
            return None
        return values[0] if self.pick == "first" else values[-1]

    def __repr__(self) -> str:
        order = f", order_by={self.order_by!r}" if self.order_by else ""
        return f"Values({self.lookup!r}, pick={self.pick!r}{order})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Values):
            return NotImplemented
        return (self.lookup, self.pick, self.order_by) == (other.lookup, other.pick, other.order_by)

    def __hash__(self) -> int:
        return hash((self.lookup, self.pick, self.order_by))


class ProductAdapter:
    """Subclass and name it in RECOMMENDATIONS["PRODUCT_ADAPTER"] when a shop's products need code, not lookups.

    The sync reads PRODUCT_FIELDS for every key first; `values` then overrides the keys it returns. An adapter is
    instantiated once per sync (and once per saved product), with no arguments.
    """

    def get_queryset(self, queryset: Any) -> Any:
        """Which host products have profiles, and what to prefetch for `values` (e.g. leave out variants)."""
        return queryset

    def values(self, product: Any) -> dict[str, Any]:
        """Computed values for any profile keys of this host product; they override the PRODUCT_FIELDS mapping.

        "category" may be a list: the first is the profile's category and all of them its categories.
        """
        return {}

    def product_id_for(self, product: Any) -> str:
        """The profile id this product's events are recorded under (a variant's: its parent's, say)."""
        from recommendations.conf import rec_settings

        field = rec_settings.PRODUCT_ID_FIELD
        return str(product.pk if field == "pk" else getattr(product, field))


class AdapterError(ImportError):
    """PRODUCT_ADAPTER names nothing importable, or something that is not a ProductAdapter subclass."""


def adapter_class(path: str | None) -> type[ProductAdapter] | None:
    """The class a dotted path names (None for no path); AdapterError, saying why, when it cannot be used."""
    from django.utils.module_loading import import_string

    if path is None or path == "":
        return None
    if not isinstance(path, str):
        raise AdapterError(
            _("PRODUCT_ADAPTER must be a dotted path string, not %(type)s.") % {"type": type(path).__name__}
        )
    try:
        found = import_string(path)
    except ImportError as exc:
        raise AdapterError(
            _("PRODUCT_ADAPTER %(path)r cannot be imported: %(error)s") % {"path": path, "error": exc}
        ) from exc
    if not (isinstance(found, type) and issubclass(found, ProductAdapter)):
        raise AdapterError(
            _("PRODUCT_ADAPTER %(path)r is not a subclass of recommendations.product_fields.ProductAdapter.")
            % {"path": path}
        )
    return found


def load_adapter() -> ProductAdapter | None:
    """An instance of the configured PRODUCT_ADAPTER, or None when the shop names none."""
    from recommendations.conf import rec_settings

    cls = adapter_class(rec_settings.PRODUCT_ADAPTER)
    return cls() if cls is not None else None
