"""Answers "what should this shopper see in this placement", from the precomputed lists and this session.

The pipeline, the same for every placement (`recommend`):

    candidates (stored list, or the shopper's own history) → re-rank with this session's events (for_you)
    → filters (active, in stock, not the current product, not in the cart, not bought unless allowed, not shown
    higher on the page) → diversity cap per category / brand → fill from the fallback chain (trending in the
    context category → trending → popular) → a reason per item.

Serving only reads: stored lists, product profiles and the shopper's newest events. It has a time budget (past it,
the optional steps are skipped and the block is filled from the shared lists) and never raises: an error is logged
and answered by the fallback. The blocks of one page share one `RenderPass`, so what they all read (the active set,
the shopper's version and events, profiles, stored lists) is read once per page. On PostgreSQL the reads are plain SQL
(`serving_sql`: the ORM cost more than the database did); the blocks a page built are cached after its response.

One idea per module, each importing only those below it (a contract in pyproject.toml says so):

    pipeline   recommend: request → candidates → picker → fallback → reasons, the time budget, the read-ahead
    cache      the block cache: keys, the stamp that keeps a block current, the write after the response
    picker     filters, diversity caps, pins, the exploration share
    sources    candidates per placement, the session re-rank, strategies, fallback steps, shared-list titles
    reasons    reason codes worded for a shopper, the card's fields
    profiles   product profiles per pass and the process' profile hold
    shopper    a shopper's state from their newest events, their version stamp
    block      Request, Block, Recommendation

This package re-exports every name callers use as `serving.X`: callers outside the package import from here.
"""

from __future__ import annotations

from recommendations.lists.store import (
    RenderPass,
    active_set_id,
    forget_active_set,
    render_pass,
    shared_items,
    stored_items,
    stored_lists,
)
from recommendations.serving.block import Block, Recommendation, Request
from recommendations.serving.cache import cache_pending
from recommendations.serving.pipeline import (
    read_ahead_many,
    recommend,
    recommend_for_shopper,
    similar_products,
    trending,
)
from recommendations.serving.profiles import PROFILE_HOLD, PROFILE_HOLD_MAX, PROFILE_HOLD_SECONDS, Profile
from recommendations.serving.reasons import attach_products, attach_products_many, reason_text, shown_title
from recommendations.serving.shopper import (
    RECENT_EVENTS,
    SHOPPER_VERSION_TTL,
    ShopperState,
    bought_by,
    shopper_state,
    shopper_version,
    touch_shoppers,
)
from recommendations.serving.sources import SESSION_ANCHORS, SOURCES, STRATEGY_SOURCES
from recommendations.tunables import Candidate, Placement, UnknownPlacement, placement_config, placement_names

__all__ = [
    "PROFILE_HOLD",
    "PROFILE_HOLD_MAX",
    "PROFILE_HOLD_SECONDS",
    "RECENT_EVENTS",
    "SESSION_ANCHORS",
    "SHOPPER_VERSION_TTL",
    "SOURCES",
    "STRATEGY_SOURCES",
    "Block",
    "Candidate",
    "Placement",
    "Profile",
    "Recommendation",
    "RenderPass",
    "Request",
    "ShopperState",
    "UnknownPlacement",
    "active_set_id",
    "attach_products",
    "attach_products_many",
    "bought_by",
    "cache_pending",
    "forget_active_set",
    "placement_config",
    "placement_names",
    "read_ahead_many",
    "reason_text",
    "recommend",
    "recommend_for_shopper",
    "render_pass",
    "shared_items",
    "shopper_state",
    "shopper_version",
    "shown_title",
    "similar_products",
    "stored_items",
    "stored_lists",
    "touch_shoppers",
    "trending",
]
