"""Template tags that render recommendation blocks.

One tag for every surface, the form a Django developer reads at a glance::

    {% load recommendations %}
    {% recommendations "for_you" %}
    {% recommendations "similar" product=product limit=8 %}
    {% recommendations "bought_together" product=product %}     {# or, on the cart page, with no product #}
    {% recommendations "trending" category=category.slug %}
    {% recommendations "recently_viewed" %}
    {% recommendations "buy_again" %}

A block renders `recommendations/blocks/<placement>.html` when the project has one, else
`recommendations/block.html`, which renders each item with `recommendations/block_item.html` (a neutral card of the
engine's name, price and reason; a shop overrides that one file to show its own product card). Blocks render with the
request's context (context processors, a CSRF token for a form in a card). The older one-surface tags
(`recommended_for_you`, `similar_products`, `trending_products`) remain as shortcuts. A tag never raises: an error
is logged and the block renders from the fallback or not at all, because a broken recommendation must never take a
shop page down.
"""

from __future__ import annotations

import logging
from typing import Any

from django import template
from django.template.loader import select_template
from django.utils.safestring import SafeString, mark_safe

from recommendations import catalog, serving, tracking, tunables
from recommendations.conf import rec_settings

logger = logging.getLogger(__name__)
register = template.Library()

BLOCK_TEMPLATE = "recommendations/block.html"
SHOWN_ATTR = "_recommendations_shown"
PASS_ATTR = "_recommendations_pass"


def _shown(context: template.Context) -> set[str]:
    """Product ids already shown by blocks higher on this page (kept on the request)."""
    request = context.get("request")
    if request is None:
        return set()
    if not hasattr(request, SHOWN_ATTR):
        setattr(request, SHOWN_ATTR, set())
    return getattr(request, SHOWN_ATTR)


def _render_pass(request: Any) -> serving.RenderPass | None:
    """One pass per request: the blocks of a page read the shopper's events, version and profiles once, and are
    cached together once the response has gone out (when VisitorMiddleware is there to say when)."""
    if request is None:
        return None
    if not hasattr(request, PASS_ATTR):
        shared = serving.RenderPass()
        if tracking.after_response(request, lambda: serving.cache_pending(shared)):
            shared.pending = {}
        setattr(request, PASS_ATTR, shared)
    return getattr(request, PASS_ATTR)


def _limit(limit: Any) -> int | None:
    if limit is None or limit == "":
        return None
    try:
        value = int(limit)
    except (TypeError, ValueError):
        return None
    return max(1, min(value, 50))


def _product_id(product: Any) -> str:
    if product is None or product == "":
        return ""
    if isinstance(product, str | int):
        return str(product)
    return catalog.product_id_of(product)


def block_context(request: Any, block: serving.Block | None, placement: str) -> dict[str, Any]:
    title = block.title if block is not None else ""
    if not title:
        title = rec_settings.TITLES.get(placement, "")
    title = serving.shown_title(title)
    if block is None:
        return {"block": None, "items": [], "title": title, "placement": placement}
    return {
        "block": block,
        "items": block.items,
        "title": title,
        "placement": block.placement,
        "recommendation_id": block.recommendation_id,
        "request": request,
    }


def render_block(
    context: template.Context,
    placement: str,
    *,
    product: Any = None,
    category: Any = None,
    cart: Any = None,
    limit: Any = None,
) -> SafeString:
    """Build, attach products, note the impression and render; any failure renders nothing and is logged."""
    request = context.get("request")
    try:
        shown = _shown(context)
        shopper = tracking.get_shopper(request) if request is not None else ""
        with serving.render_pass(_render_pass(request)):
            block = serving.recommend(
                placement,
                shopper=shopper,
                product_id=_product_id(product),
                category=str(category or ""),
                exclude=set(shown),
                cart=None if cart is None else [_product_id(p) for p in cart],
                limit=_limit(limit),
                campaign=tunables.campaign_of(request),
            )
            block = serving.attach_products(block)
        shown.update(item.product_id for item in block.items)
        tracking.queue_impression(request, block)
        html = select_template([f"recommendations/blocks/{placement}.html", BLOCK_TEMPLATE]).render(
            block_context(request, block, placement), request
        )
        return mark_safe(html)  # noqa: S308 - the template itself autoescapes every value
    except Exception:
        logger.exception("recommendation block %s failed to render", placement)
        return mark_safe("")


@register.simple_tag(takes_context=True)
def recommendations(
    context: template.Context,
    placement: str,
    product: Any = None,
    category: Any = None,
    cart: Any = None,
    limit: Any = None,
) -> SafeString:
    """`{% recommendations "similar" product=product limit=8 %}`: one block of any placement."""
    return render_block(context, placement, product=product, category=category, cart=cart, limit=limit)


@register.simple_tag(takes_context=True)
def recommended_for_you(context: template.Context, limit: Any = None) -> SafeString:
    """The shopper's own list; trending for someone with no history yet."""
    return render_block(context, "for_you", limit=limit)


@register.simple_tag(takes_context=True)
def similar_products(context: template.Context, product: Any, limit: Any = None) -> SafeString:
    """Products like this one, for the product page."""
    try:
        product_id = _product_id(product)
    except Exception:
        logger.exception("recommendation block similar failed to render")
        return mark_safe("")
    return render_block(context, "similar", product=product_id, limit=limit)


@register.simple_tag(takes_context=True)
def trending_products(context: template.Context, category: str | None = None, limit: Any = None) -> SafeString:
    """What is selling and being looked at now, shop-wide or in one category, minus what this page already shows."""
    return render_block(context, "trending", category=category, limit=limit)


def _render_consent(context: template.Context, name: str, *, unasked_only: bool = False) -> SafeString:
    """One of the consent snippets with the request's answer; nothing (logged) when it cannot render."""
    request = context.get("request")
    try:
        if request is None:
            return mark_safe("")
        consent = tracking.consent_of(request)
        if unasked_only and consent.asked:
            return mark_safe("")
        data = {"consent": consent, "next": request.get_full_path(), "request": request}
        html = select_template([f"recommendations/{name}.html"]).render(data, request)
        return mark_safe(html)  # noqa: S308 - the template itself autoescapes every value
    except Exception:
        logger.exception("the %s failed to render", name)
        return mark_safe("")


@register.simple_tag(takes_context=True)
def consent_banner(context: template.Context) -> SafeString:
    """`{% consent_banner %}`: asks a shopper who has not answered yet (nor sent Global Privacy Control) whether the
    shop may personalise from what they do; renders nothing once they answered. Override
    `recommendations/consent_banner.html` to word or style it your way; keep the form's field names."""
    return _render_consent(context, "consent_banner", unasked_only=True)


@register.simple_tag(takes_context=True)
def consent_switch(context: template.Context) -> SafeString:
    """`{% consent_switch %}`: the shopper's current answer and a button to change it, for an account or privacy
    page. A signed-in shopper's answer is kept on their account, so it holds on every device."""
    return _render_consent(context, "consent_switch")
