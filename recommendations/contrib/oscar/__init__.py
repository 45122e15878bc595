"""django-oscar support: events from Oscar's own signals, a field mapping for its catalogue, template snippets.

A host adds "recommendations.contrib.oscar" to INSTALLED_APPS (after "recommendations") and, in settings.py:

    from recommendations.contrib import oscar as recommendations_oscar

    RECOMMENDATIONS = {
        "PRODUCT_MODEL": "catalogue.Product",
        "PRODUCT_FIELDS": recommendations_oscar.PRODUCT_FIELDS,
        "PRODUCT_ADAPTER": "recommendations.contrib.oscar.OscarProductAdapter",
    }

This module is imported from settings.py, before the app registry is ready: it and `adapter` import no models.
"""

from __future__ import annotations

from typing import Any

from recommendations.contrib.oscar.adapter import OscarProductAdapter
from recommendations.product_fields import Values

# What lookups can read in one grouped query per key; the adapter computes the rest (price, stock, brand, text), which
# need the product's children or attributes. A child product has no categories of its own in Oscar: its parent's
# profile carries them, and its events are recorded under its parent.
PRODUCT_FIELDS: dict[str, Any] = {
    "name": "title",
    "category": Values("categories__slug", pick="all", order_by="-categories__depth"),
    "created_at": "date_created",
    "active": "is_public",
}

__all__ = ["PRODUCT_FIELDS", "OscarProductAdapter"]
