"""Erasing what the app keeps about shoppers: `erase(user_ids=..., visitor_ids=...)`, and the same when the host
deletes a user.

What goes (docs/privacy.md says it for a data-protection officer):
- every event of theirs (views to purchases, searches, impressions and clicks), under their user id, their visitor
  ids and the visitors merged into their account at login, which is also the only visitor <-> user link kept;
- other shoppers' events whose recommendation id points at a block shown to them lose that pointer (the attribution
  counts stay, on `placement` and `variant`);
- their stored lists in every recommendation set (for_you, experiment arms' "for_you@run<id>", anything keyed by them);
- every cache key that names them (`keys.shopper_key_patterns`: cached blocks, their version stamp, a queued
  refresh's debounce mark, API throttle counters).
Experiment arms are a hash of the shopper key and the daily analytics are counts, so neither holds an id.

Events are deleted in batches of `BATCH_SIZE`, each in its own short transaction, so a shopper with a million events
never holds a long lock; running it twice finds nothing the second time. Each erasure leaves an `ErasureRequest`
(who asked, when, through what, the counts, a keyed hash of each id named), never the ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from recommendations import keys
from recommendations.models import ErasureRequest, Event, StoredList
from recommendations.privacy.subjects import Subjects, resolve, subject_hash

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000  # events per DELETE: a few milliseconds of row locks on PostgreSQL
Progress = Callable[[str, int, int], None]  # (stage, done, total), as management.stage_bars.StageBars takes it


def _delete_events(subjects: Subjects, batch_size: int, progress: Progress | None) -> tuple[int, dict[str, int], int]:
    """Delete their events batch by batch; returns (deleted, deleted per event type, attribution pointers unlinked)."""
    mine = Event.objects.filter(subjects.events_filter()).order_by()
    by_type = dict(mine.values_list("event_type").annotate(n=Count("pk")).values_list("event_type", "n"))
    total = sum(by_type.values())
    deleted = unlinked = 0
    if progress:
        progress("events", 0, total)
    while True:
        with transaction.atomic():
            rows = list(mine.values_list("pk", "recommendation_id")[:batch_size])
            if not rows:
                break
            pks = [pk for pk, _ in rows]
            pointers = {rec for _, rec in rows if rec}
            if pointers:
                # A block shown to them (their impression's or click's id), named on someone else's row.
                unlinked += (
                    Event.objects.filter(recommendation_id__in=pointers)
                    .exclude(pk__in=pks)
                    .exclude(subjects.events_filter())
                    .update(recommendation_id="")
                )
            deleted += Event.objects.filter(pk__in=pks).delete()[0]
        if progress:
            progress("events", min(deleted, total), total)
    return deleted, by_type, unlinked


def _delete_lists(subjects: Subjects, batch_size: int) -> int:
    deleted = 0
    shoppers = subjects.shoppers
    for start in range(0, len(shoppers), batch_size):
        with transaction.atomic():
            deleted += StoredList.objects.filter(subject__in=shoppers[start : start + batch_size]).delete()[0]
    return deleted


def delete_cache_keys(shoppers: Iterable[str]) -> int | None:
    """Delete every shared-cache key that names these shoppers; returns how many, or None when the cache backend
    cannot be searched (memcached, a database cache): then the blocks are only stale (their version was moved) and
    expire within BLOCK_CACHE_SECONDS."""
    cache = caches["default"]
    exact: list[str] = []
    patterns: list[str] = []
    for shopper in shoppers:
        more_exact, more_patterns = keys.shopper_key_patterns(shopper)
        exact += more_exact
        patterns += more_patterns
    if isinstance(cache, RedisCache):
        client = cache._cache.get_client(None, write=True)
        names = [cache.make_key(k) for k in exact]
        for pattern in patterns:
            names += client.scan_iter(match=cache.make_key(pattern), count=1000)
        return sum(client.delete(*names[i : i + 500]) for i in range(0, len(names), 500))
    if hasattr(cache, "delete_pattern"):  # django-redis
        return sum(int(cache.delete_pattern(p) or 0) for p in patterns) + sum(1 for k in exact if cache.delete(k))
    if isinstance(cache, LocMemCache):
        made = {cache.make_key(k) for k in exact}
        made_patterns = [cache.make_key(p) for p in patterns]
        with cache._lock:
            found = [k for k in list(cache._cache) if k in made or any(fnmatchcase(k, p) for p in made_patterns)]
            return sum(1 for k in found if cache._delete(k))
    cache.delete_many(exact)
    logger.warning(
        "the cache backend %s cannot be searched: erased shoppers' cached blocks are stale and expire by themselves",
        type(cache).__name__,
    )
    return None


def erase(
    user_ids: Iterable[str | int] | None = None,
    visitor_ids: Iterable[str] | None = None,
    *,
    requested_by: str = "",
    via: str = "python",
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> ErasureRequest:
    """Remove everything the app keeps about these shoppers and record the erasure; returns the ErasureRequest,
    whose `counts` say how many rows and keys went. Raises InvalidSubjects (naming the field) on bad ids.

    Safe to repeat. Each batch is its own transaction when called outside one; inside one (a user's deletion), the
    batches are savepoints and everything stands or falls with the caller.
    """
    from recommendations.serving import touch_shoppers

    subjects = resolve(user_ids, visitor_ids)
    hashes = sorted(
        [subject_hash("user", u) for u in subjects.user_ids]
        + [subject_hash("visitor", v) for v in subjects.visitor_ids]
    )
    record = ErasureRequest.objects.create(
        requested_by=requested_by[:150],
        via=via[:20],
        subjects=len(subjects.user_ids) + len(subjects.visitor_ids),
        subject_hashes=hashes,
    )
    shoppers = subjects.shoppers
    events, by_type, unlinked = _delete_events(subjects, batch_size, progress)
    lists = _delete_lists(subjects, batch_size)
    cache_keys = delete_cache_keys(shoppers)
    if cache_keys is None:
        # A cache that cannot be searched: a cached block carries the shopper's version and is never served under a
        # new one, so moving it retires them (the version keys themselves expire within a day).
        touch_shoppers(shoppers)
    # Again after commit: a page built from the old rows while this ran may have cached a block since.
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _sweep_quietly(shoppers))
    record.counts = {
        "events": events,
        "events_by_type": by_type,
        "attribution_unlinked": unlinked,
        "stored_lists": lists,
        "cache_keys": cache_keys,
        "linked_visitors": len(subjects.linked_visitor_ids),
        "shopper_keys": len(shoppers),
    }
    record.finished_at = timezone.now()
    record.save(update_fields=["counts", "finished_at"])
    logger.info("erasure #%s by %r via %s: %s", record.pk, requested_by, via, record.counts)
    return record


def _sweep_quietly(shoppers: list[str]) -> None:
    try:
        delete_cache_keys(shoppers)
    except Exception:
        logger.exception("could not delete the cache keys of %d erased shoppers", len(shoppers))


def shoppers_of_user(user_id: str) -> set[str]:
    """Every shopper key the app may file this user's data under: theirs and their merged visitors'."""
    return set(resolve([str(user_id)]).shoppers)


def erase_user(user_id: str) -> dict[str, Any]:
    """Erase a deleted user (and the visitors merged into them); runs in the caller's transaction."""
    return erase([str(user_id)], via="user_deleted").counts


def on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_delete of the user model: forget them. A failure is logged, never turned into a failed deletion."""
    user_id = instance.pk  # still set: Django clears it only after every post_delete receiver ran
    if user_id is None:
        return
    try:
        with transaction.atomic():  # a savepoint: a failure here leaves the user's own deletion intact
            erase_user(str(user_id))
    except Exception:
        logger.exception("could not erase the recommendation data of a deleted user")
