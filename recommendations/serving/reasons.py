"""Reasons and rendering: the sentence a shopper reads for a reason code (worded at render time, so wording and
language change without a recompute), the products reasons name, and the card's fields from the profile."""

from __future__ import annotations

from collections.abc import Iterable

from django.utils.translation import gettext, gettext_lazy

from recommendations import catalog
from recommendations.engine import reasons as rc
from recommendations.serving.block import Block, Recommendation
from recommendations.serving.profiles import _profiles


def _anchors(reasons: Iterable[str]) -> set[str]:
    """The products that reason codes name ("because:<id>", "together:<id>", ...)."""
    return {reason.split(":", 1)[1] for reason in reasons if ":" in reason and reason.split(":", 1)[0] in rc.ANCHORED}


def _name_reasons(items: list[Recommendation]) -> None:
    anchors = _anchors(item.reason for item in items)
    names = {pid: profile.name for pid, profile in _profiles(anchors).items()} if anchors else {}
    for item in items:
        item.reason_text = reason_text(item.reason, names)


_REASON_TEXTS = {  # lazy: translated in the shopper's language when a block is built
    rc.TRENDING: gettext_lazy("Trending now"),
    rc.POPULAR: gettext_lazy("Popular"),
    rc.ALSO: gettext_lazy("Often viewed together"),
    rc.FOR_YOU: gettext_lazy("Picked for your taste"),
    rc.VIEWED: gettext_lazy("You viewed this"),
    rc.REPEAT: gettext_lazy("You bought this before"),
    rc.NEW: gettext_lazy("New arrival"),
    rc.FEATURED: gettext_lazy("Featured"),
    rc.RULE: gettext_lazy("Selected for you"),
}


def reason_text(reason: str, names: dict[str, str]) -> str:
    """A shopper-facing sentence for a reason code, so wording (and language) can change without a recompute."""
    kind, arg = rc.split(reason)
    if kind in (rc.BECAUSE, rc.SESSION):  # the stored list's anchor or this session's: the same to a shopper
        anchor = names.get(arg)
        return (
            gettext("Because you looked at %(name)s") % {"name": anchor}
            if anchor
            else gettext("Based on your browsing")
        )
    if kind == rc.TOGETHER:
        anchor = names.get(arg)
        return (
            gettext("Bought together with %(name)s") % {"name": anchor} if anchor else gettext("Often bought together")
        )
    if kind == rc.SIMILAR:
        anchor = names.get(arg)
        return gettext("Similar to %(name)s") % {"name": anchor} if anchor else gettext("Similar")
    if kind == rc.TRENDING and arg:
        return gettext("Trending in %(category)s") % {"category": arg.replace("-", " ").replace("_", " ").title()}
    return str(_REASON_TEXTS.get(kind, ""))


def shown_title(title: str) -> str:
    """A block's title in the shopper's language. Titles stay English (a msgid) in the settings, the admin's placement
    rows and the block cache, so a default title shows translated and one staff changed shows as they wrote it."""
    return gettext(title) if title else ""


def attach_products(block: Block) -> Block:
    """Load the host's product objects and the engine's profile (name, price, brand, category) for rendering; drops
    ids the host no longer has. The default card reads the profile, which sync_products filled through
    PRODUCT_FIELDS, because the host's model may call its fields anything (`title`, `amount`)."""
    ids = [item.product_id for item in block.items]
    products = catalog.get_products(ids)
    profiles = _profiles(ids)  # read by the build already: from the pass or the process' hold
    kept = []
    for item in block.items:
        item.product = products.get(item.product_id)
        if item.product is not None:
            profile = profiles.get(item.product_id)
            if profile is not None:
                item.category, item.brand = profile.category, profile.brand
                item.name, item.price = profile.name, profile.price
            kept.append(item)
    block.items = kept
    if any(not item.reason_text for item in kept):
        _name_reasons([item for item in kept if not item.reason_text])
    return block
