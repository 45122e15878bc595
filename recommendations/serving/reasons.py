"""Reasons and rendering: the sentence a shopper reads for a reason code (worded at render time, so wording and
language change without a recompute), the products reasons name, and the card's fields from the profile."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from django.utils.functional import SimpleLazyObject
from django.utils.translation import gettext, gettext_noop

from recommendations import catalog
from recommendations.engine import reasons as rc
from recommendations.serving.block import Block, Recommendation
from recommendations.serving.profiles import _profiles


def _anchors(reasons: Iterable[str]) -> set[str]:
    """The products that reason codes name ("because:<id>", "together:<id>", ...)."""
    return set(_iter_anchors(reasons))


def _iter_anchors(reasons: Iterable[str]) -> Iterator[str]:
    """`_anchors` one by one, as they are read: a caller that may not need them passes this unread."""
    anchored = rc.ANCHORED
    for reason in reasons:  # every window of candidates a block looks at: one partition a reason
        kind, colon, product_id = reason.partition(":")
        if colon and kind in anchored:
            yield product_id


def _name_reasons(items: list[Recommendation]) -> None:
    anchors = _anchors(item.reason for item in items)
    names = {pid: profile.name for pid, profile in _profiles(anchors).items()} if anchors else {}
    said: dict[str, str] = {}  # each sentence translated once per block, not once per item

    def translated(message: str) -> str:
        text = said.get(message)
        if text is None:
            text = said[message] = gettext(message)
        return text

    for item in items:
        item.reason_text = reason_text(item.reason, names, translated)


_REASON_TEXTS = {  # msgids: translated in the shopper's language when a block is built
    rc.TRENDING: gettext_noop("Trending now"),
    rc.POPULAR: gettext_noop("Popular"),
    rc.ALSO: gettext_noop("Often viewed together"),
    rc.FOR_YOU: gettext_noop("Picked for your taste"),
    rc.VIEWED: gettext_noop("You viewed this"),
    rc.REPEAT: gettext_noop("You bought this before"),
    rc.NEW: gettext_noop("New arrival"),
    rc.FEATURED: gettext_noop("Featured"),
    rc.RULE: gettext_noop("Selected for you"),
}


def reason_text(reason: str, names: dict[str, str], translated: Callable[[str], str] = gettext) -> str:
    """A shopper-facing sentence for a reason code, so wording (and language) can change without a recompute."""
    kind, arg = rc.split(reason)
    if kind in (rc.BECAUSE, rc.SESSION):  # the stored list's anchor or this session's: the same to a shopper
        anchor = names.get(arg)
        return (
            translated(gettext_noop("Because you looked at %(name)s")) % {"name": anchor}
            if anchor
            else translated(gettext_noop("Based on your browsing"))
        )
    if kind == rc.TOGETHER:
        anchor = names.get(arg)
        return (
            translated(gettext_noop("Bought together with %(name)s")) % {"name": anchor}
            if anchor
            else translated(gettext_noop("Often bought together"))
        )
    if kind == rc.SIMILAR:
        anchor = names.get(arg)
        return (
            translated(gettext_noop("Similar to %(name)s")) % {"name": anchor}
            if anchor
            else translated(gettext_noop("Similar"))
        )
    if kind == rc.TRENDING and arg:
        category = arg.replace("-", " ").replace("_", " ").title()
        return translated(gettext_noop("Trending in %(category)s")) % {"category": category}
    text = _REASON_TEXTS.get(kind)
    return translated(text) if text else ""


def shown_title(title: str) -> str:
    """A block's title in the shopper's language. Titles stay English (a msgid) in the settings, the admin's placement
    rows and the block cache, so a default title shows translated and one staff changed shows as they wrote it."""
    return gettext(title) if title else ""


def attach_products(block: Block) -> Block:
    """Load the host's product objects and the engine's profile (name, price, brand, category) for rendering; drops
    ids the host no longer has. The default card reads the profile, which sync_products filled through
    PRODUCT_FIELDS, because the host's model may call its fields anything (`title`, `amount`)."""
    attach_products_many([block])
    return block


def attach_products_many(blocks: list[Block], *, lazy: bool = False) -> None:
    """`attach_products` for several blocks with one read of the host's products (a sender's batch of e-mails).

    `lazy`: the ids the host no longer has are dropped as before (one query for ids), but the product objects are
    built only when something first reads one, all of the call's together. A default e-mail shows the profile's
    name and price and never reads them; building a few thousand host objects per batch cost more than composing.
    """
    ids = list(dict.fromkeys(item.product_id for block in blocks for item in block.items))
    if lazy:
        loaded = _Products(ids)
        products: dict[str, Any] = {
            pid: SimpleLazyObject(partial(loaded.get, pid)) for pid in catalog.host_product_ids(ids)
        }
    else:
        products = catalog.get_products(ids)
    profiles = _profiles(ids)  # read by the build already: from the pass or the process' hold
    unnamed = []
    for block in blocks:
        kept = []
        for item in block.items:
            item.product = products.get(item.product_id)
            if item.product is not None:
                profile = profiles.get(item.product_id)
                if profile is not None:
                    item.category, item.brand = profile.category, profile.brand
                    item.name, item.price = profile.name, profile.price
                kept.append(item)
                if not item.reason_text:
                    unnamed.append(item)
        block.items = kept
    if unnamed:
        _name_reasons(unnamed)


class _Products:
    """The host's product objects of many blocks, loaded together the first time one is asked for."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.found: dict[str, Any] | None = None

    def get(self, product_id: str) -> Any:
        if self.found is None:
            self.found = catalog.get_products(self.ids)
        return self.found.get(product_id)
