"""The product adapter for Oscar's catalogue: one profile per parent or standalone product, its variants folded in.

Oscar keeps price and stock on stock records, on the variants (child products) of a parent rather than on the parent,
and a product's brand, if it has one, in an attribute. Lookups cannot say "the lowest price over the product and its
children", so the adapter computes price, stock, brand and text from prefetched rows (one query per relation and
batch, not one per product). Imported from settings.py: no models at import time.
"""

from __future__ import annotations

from typing import Any

from django.utils.html import strip_tags

from recommendations.product_fields import ProductAdapter


class OscarProductAdapter(ProductAdapter):
    """Profiles for Oscar products. Subclass it to name the attribute that holds a brand (`brand_attribute`)."""

    # The code of the product attribute holding the brand (e.g. "brand"); None: the product class is the brand.
    brand_attribute: str | None = None

    def get_queryset(self, queryset: Any) -> Any:
        """Parents and standalone products only: a variant's events are recorded under its parent."""
        return (
            queryset.exclude(structure="child")
            .select_related("product_class")
            .prefetch_related("stockrecords", "children__stockrecords", "attribute_values__attribute")
        )

    def values(self, product: Any) -> dict[str, Any]:
        records = [*product.stockrecords.all()]
        for child in product.children.all():
            records.extend(child.stockrecords.all())
        prices = [record.price for record in records if record.price is not None]
        attributes = list(product.attribute_values.all())
        return {
            "price": min(prices) if prices else None,
            "in_stock": any(self.has_stock(product, record) for record in records),
            "brand": self.brand(product, attributes),
            "text": self.text(product, attributes),
        }

    def has_stock(self, product: Any, record: Any) -> bool:
        """Oscar's rule: stock is counted only where the product class tracks it; net of allocations."""
        product_class = product.product_class
        if product_class is not None and not product_class.track_stock:
            return True
        if record.num_in_stock is None:
            return False
        return record.num_in_stock - (record.num_allocated or 0) > 0

    def brand(self, product: Any, attributes: list[Any]) -> str:
        if self.brand_attribute:
            for value in attributes:
                if value.attribute.code == self.brand_attribute:
                    return str(value.value_as_text)
            return ""
        return product.product_class.name if product.product_class is not None else ""

    def text(self, product: Any, attributes: list[Any]) -> str:
        """The description without its HTML, then every attribute's value."""
        parts = [strip_tags(product.description or "")]
        parts.extend(str(value.value_as_text) for value in attributes)
        return " ".join(part.strip() for part in parts if part and part.strip())

    def product_id_for(self, product: Any) -> str:
        """A variant's events are recorded under its parent's id, where its profile is."""
        if getattr(product, "structure", None) == "child" and product.parent_id is not None:
            return super().product_id_for(product.parent)
        return super().product_id_for(product)
