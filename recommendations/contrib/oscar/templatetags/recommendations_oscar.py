"""Filters the Oscar snippets use to hand our tag the ids profiles are kept under (a variant's: its parent's).

    {% load recommendations recommendations_oscar %}
    {% recommendations "similar" product=product|recommendation_id %}
    {% recommendations "bought_together" cart=request.basket|basket_product_ids %}

Like our tags, they never raise into a page: on an error they log and give what renders no block.
"""

from __future__ import annotations

import logging
from typing import Any

from django import template

from recommendations.contrib.oscar.receivers import profile_id

logger = logging.getLogger(__name__)
register = template.Library()


@register.filter
def recommendation_id(product: Any) -> str:
    """The profile id of an Oscar product ("" for none)."""
    if product is None or product == "":
        return ""
    try:
        return profile_id(product)
    except Exception:
        logger.exception("recommendations: no profile id for %r", product)
        return ""


@register.filter
def basket_product_ids(basket: Any) -> list[str]:
    """The profile ids of the products in an Oscar basket, in line order, each once."""
    if basket is None:
        return []
    try:
        lines = basket.all_lines() if getattr(basket, "id", None) else []
        ids = [profile_id(line.product) for line in lines if line.product is not None]
    except Exception:
        logger.exception("recommendations: cannot read the basket's products")
        return []
    return list(dict.fromkeys(ids))
