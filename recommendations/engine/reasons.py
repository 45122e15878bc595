"""Reason codes: why an item is in a list, spelled once for everything that writes or reads them.

A code is a kind, or "<kind>:<argument>" (a product id, a category). Lists store codes, never sentences, so the
wording (serving/reasons.py, translated per shopper) changes without a recompute. Pure strings: the engine, the lists,
the tunables and serving all import this.
"""

from __future__ import annotations

# Kinds whose argument is a product id: the anchor a shopper reads about ("Because you looked at X").
BECAUSE = "because"  # the shopper's own history item that led to it (precompute, refresh)
SESSION = "session"  # this session's view that led to it (serving's re-rank)
TOGETHER = "together"  # bought together with the anchor
SIMILAR = "similar"  # filled from the anchor's similar list
ANCHORED = (BECAUSE, SESSION, TOGETHER, SIMILAR)

TRENDING = "trending"  # shop-wide, or "trending:<category>"
POPULAR = "popular"  # best sellers
ALSO = "also"  # a product page's similar list: often viewed together
FOR_YOU = "for_you"  # the model's own pick, no single anchor
VIEWED = "viewed"  # recently viewed
REPEAT = "repeat"  # bought before and due again (buy_again)
NEW = "new"  # a new arrival (exploration slot, newest strategy, a cold-start rule)
FEATURED = "featured"  # pinned by a merchandising rule
RULE = "rule"  # "rule:<id>": a cold-start rule's pick (also the item's source)

# Prefixes, for lists built item by item where a call per item would cost (precompute writes millions).
BECAUSE_ = BECAUSE + ":"
SESSION_ = SESSION + ":"
TOGETHER_ = TOGETHER + ":"
SIMILAR_ = SIMILAR + ":"
TRENDING_ = TRENDING + ":"
RULE_ = RULE + ":"


def code(kind: str, argument: object = "") -> str:
    """`kind`, or `kind:argument` when there is one."""
    return f"{kind}:{argument}" if argument != "" and argument is not None else kind


def split(reason: str) -> tuple[str, str]:
    """(kind, argument) of a code; the argument is "" when there is none."""
    kind, _, argument = reason.partition(":")
    return kind, argument
