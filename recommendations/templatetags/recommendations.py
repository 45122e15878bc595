"""Template tags that render recommendation blocks: `{% recommended_for_you %}`, `{% similar_products product %}`.

A tag never raises: an error is logged and the block renders from the fallback or not at all, because a
broken recommendation must never take a shop page down.
"""

from __future__ import annotations

import logging
from typing import Any

from django import template

from recommendations import catalog, serving, tracking
from recommendations.conf import rec_settings

logger = logging.getLogger(__name__)
register = template.Library()

BLOCK_TEMPLATE = "recommendations/block.html"


def _context(block: serving.Block | None, title: str) -> dict[str, Any]:
    if block is None:
        return {"block": None, "items": [], "title": title}
    return {
        "block": block,
        "items": block.items,
        "title": title,
        "placement": block.placement,
        "recommendation_id": block.recommendation_id,
    }


SHOWN_ATTR = "_recommendations_shown"


def _shown(context: template.Context) -> set[str]:
    """Product ids already shown by blocks higher on this page (kept on the request)."""
    request = context.get("request")
    if request is None:
        return set()
    if not hasattr(request, SHOWN_ATTR):
        setattr(request, SHOWN_ATTR, set())
    return getattr(request, SHOWN_ATTR)


def _render(context: template.Context, placement: str, build: Any) -> dict[str, Any]:
    title = rec_settings.TITLES.get(placement, "")
    try:
        block = serving.attach_products(build())
        _shown(context).update(item.product_id for item in block.items)
        return _context(block, title)
    except Exception:
        logger.exception("recommendation block %s failed to render", placement)
        return _context(None, title)


def _limit(limit: Any) -> int:
    try:
        value = int(limit) if limit is not None else rec_settings.BLOCK_SIZE
    except (TypeError, ValueError):
        value = rec_settings.BLOCK_SIZE
    return max(1, min(value, 50))


@register.inclusion_tag(BLOCK_TEMPLATE, takes_context=True)
def recommended_for_you(context: template.Context, limit: Any = None) -> dict[str, Any]:
    """The shopper's own list; trending for someone with no history yet."""
    request = context.get("request")

    def build() -> serving.Block:
        shopper = tracking.get_shopper(request) if request is not None else ""
        return serving.recommend_for_shopper(shopper, _limit(limit))

    return _render(context, "for_you", build)


@register.inclusion_tag(BLOCK_TEMPLATE, takes_context=True)
def similar_products(context: template.Context, product: Any, limit: Any = None) -> dict[str, Any]:
    """Products like this one, for the product page."""
    return _render(context, "similar", lambda: serving.similar_products(catalog.product_id_of(product), _limit(limit)))


@register.inclusion_tag(BLOCK_TEMPLATE, takes_context=True)
def trending_products(context: template.Context, category: str | None = None, limit: Any = None) -> dict[str, Any]:
    """What is selling and being looked at now, shop-wide or in one category, minus what this page already shows."""
    shown = set(_shown(context))
    return _render(context, "trending", lambda: serving.trending(_limit(limit), category or None, exclude=shown))
