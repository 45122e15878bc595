"""The block cache: a block's key, the stamp that keeps a cached block current (active set, shopper version, rules
version), and the write, kept back until a page's response has gone out when a render pass asks for it."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.core.cache import cache
from django.utils import translation

from recommendations import catalog, keys, tunables
from recommendations.conf import rec_settings
from recommendations.lists import store
from recommendations.lists.store import RenderPass
from recommendations.serving.block import Request

logger = logging.getLogger(__name__)


def _block_key(req: Request) -> str:
    """Per shopper; the shared lists underneath are cached apart.

    Every block depends on the shopper (bought items, cart, session, experiment arm), so no shopper's block is ever
    served to another; an anonymous request without a shopper gets the shared key. The language is in the key: the
    reasons are worded when the block is built, so a block built in English is never shown to a Chinese page. The
    active set, the shopper's version and the rules' version are not in the key but stamped in the value
    (`_cached_block`).
    """
    digest = hashlib.sha256(
        "|".join(
            [
                ",".join(sorted(req.exclude)),
                "-" if req.cart is None else ",".join(sorted(req.cart)),
                req.campaign,
                ",".join(sorted(f"{source}={title}" for source, title in req.taken)),
                translation.get_language() or "",
            ]
        ).encode()
    ).hexdigest()[:16]
    return keys.block(req.shopper, req.placement, req.product_id, req.category, req.limit or 0, digest)


def _cached_block(req: Request, *, preview: bool = False) -> tuple[str, tuple[int, str, str], dict[str, Any] | None]:
    """The block's key, the stamp it must carry to be current (active set, shopper version, rules version) and the
    cached block if it is. One round trip reads all of them (the versions and set come from the pass when an earlier
    block read them); a new event, a new set or a rule saved in the admin retires the cached blocks it affects.

    A `preview` (built afresh, never cached: the admin, an e-mail) reads neither the block nor the shopper's version,
    only what the pass does not know yet: a sender's batch of blocks costs no round trip each."""
    key = "" if preview else _block_key(req)
    memo = store.current_pass.get() or RenderPass()
    version_key = (
        keys.shopper_version(req.shopper) if req.shopper and req.shopper not in memo.versions and not preview else None
    )
    wanted = [
        *([key] if key else []),
        *([] if memo.set_known else [keys.ACTIVE_SET]),
        *([version_key] if version_key else []),
        *([] if memo.rules_version is not None else [tunables.VERSION_KEY]),
        *([] if memo.profiles_version is not None else [catalog.PROFILES_VERSION_KEY]),
    ]
    if not wanted:
        found: dict[str, Any] = {}
    elif len(wanted) > 1:
        found = cache.get_many(wanted)
    else:
        found = {wanted[0]: cache.get(wanted[0])}
    if not memo.set_known:
        memo.set_id, memo.set_known = store.active_set_from(found.get(keys.ACTIVE_SET)), True
    if version_key:
        memo.versions[req.shopper] = str(found.get(version_key) or "0")
    if memo.rules_version is None:
        memo.rules_version = tunables.version_from(found.get(tunables.VERSION_KEY))
    if memo.profiles_version is None:
        version = found.get(catalog.PROFILES_VERSION_KEY)
        memo.profiles_version = version if isinstance(version, int) else 0
        if not memo.profiles_version:  # none yet, or the cache was emptied: start one, used from the next page on
            catalog.start_profiles_version()
    stamp = (memo.set_id or 0, memo.versions.get(req.shopper, "0") if req.shopper else "0", memo.rules_version)
    cached = found.get(key) if key else None
    return key, stamp, cached if cached is not None and cached.get("stamp") == stamp else None


def _cache_block(key: str, value: dict[str, Any]) -> None:
    memo = store.current_pass.get()
    if memo is not None and memo.pending is not None:
        memo.pending[key] = value
    else:
        cache.set(key, value, int(rec_settings.BLOCK_CACHE_SECONDS))


def cache_pending(memo: RenderPass) -> None:
    """Cache the blocks the pass built and kept back, in one round trip; a failure only costs the next page a build."""
    pending, memo.pending = memo.pending, None
    if not pending:
        return
    try:
        cache.set_many(pending, int(rec_settings.BLOCK_CACHE_SECONDS))
    except Exception:
        logger.exception("could not cache %d recommendation blocks", len(pending))
