"""What a block is asked and what it answers: the `Request` (a cached block's key is made of exactly it), and the
`Block` of `Recommendation`s that the tags, the API and the admin render. Every other serving module speaks these."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recommendation:
    product_id: str
    score: float
    reason: str = ""
    product: Any = None
    reason_text: str = ""
    source: str = ""  # the stage that produced it: stored, session, history, trending, popular, rule:<id>, ...
    rules: list[str] = field(default_factory=list)  # merchandising rules that moved or pinned it
    # From the engine's product profile (attach_products): what the default card shows, so a host model whose
    # fields have other names still renders; a template may read `product` instead.
    name: str = ""
    price: Any = None
    brand: str = ""
    category: str = ""


@dataclass
class Block:
    placement: str
    items: list[Recommendation] = field(default_factory=list)
    recommendation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source: str = "stored"
    title: str = ""
    variant: str = ""  # the experiment arm that served it ("<experiment id>:<variant>"), stamped on its impression
    model: str = ""  # what produced the candidates: "serving model", "run #12", "trending", ...


@dataclass
class Request:
    """Everything a block depends on; the cache key is made of exactly this."""

    placement: str
    shopper: str = ""
    product_id: str = ""
    category: str = ""
    exclude: frozenset[str] = frozenset()
    cart: frozenset[str] | None = None  # None: derived from the shopper's events
    limit: int | None = None
    campaign: str = ""
    taken: frozenset[tuple[str, str]] = frozenset()  # (shared source, title) shown higher on the page
