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
never holds a long lock; running it twice finds nothing the second time. Many shoppers go `IDS_PER_STATEMENT` ids a
statement, and the cache is walked once for all of them (`keys.ShopperKeys`), so erasing 100,000 shoppers takes
seconds, not hours (bench/erase.py). Each erasure leaves an `ErasureRequest` (who asked, when, through what, the
counts and seconds per stage, a keyed hash of each id named), never the ids.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.db import connection, transaction
from django.db.models.signals import post_delete, pre_delete
from django.utils import timezone

from recommendations import keys
from recommendations.models import EmailConsent, ErasureRequest, Event, Message, StoredList
from recommendations.privacy.subjects import IDS_PER_STATEMENT, Subjects, resolve, subject_hashes

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000  # events per DELETE: a few milliseconds of row locks on PostgreSQL
LIST_SUBJECTS_PER_STATEMENT = 50_000  # stored lists have no index by subject: each statement is one scan of them
FEW_SHOPPERS = 16  # up to this many, the cache is searched per shopper and pattern; more, once per key family
Progress = Callable[[str, int, int], None]  # (stage, done, total), as management.stage_bars.StageBars takes it


def _delete_events(subjects: Subjects, batch_size: int, progress: Progress | None) -> tuple[int, dict[str, int], int]:
    """Delete their events batch by batch; returns (deleted, deleted per event type, attribution pointers unlinked).

    The ids go `IDS_PER_STATEMENT` at a time (a few index lookups each), and each piece's events in batches of
    `batch_size`, one transaction each: 100,000 shoppers cost three statements per 500 of them, and one shopper with
    a million events never holds more than `batch_size` rows locked.
    """
    pieces = list(subjects.events_filters(IDS_PER_STATEMENT))
    # The bar's total: exact for one piece; for more, the first piece's count times the pieces, corrected as they go
    # (counting them all would cost a third of the work). What was deleted is counted from the rows themselves.
    total = Event.objects.filter(pieces[0]).count() * len(pieces) if progress else 0
    if progress:
        progress("events", 0, total)
    deleted = unlinked = 0
    by_type: Counter[str] = Counter()
    for done, piece in enumerate(pieces, 1):
        mine = Event.objects.filter(piece).order_by().values_list("pk", "recommendation_id", "event_type")
        while True:
            with transaction.atomic():
                rows = list(mine[:batch_size])
                if not rows:
                    break
                pks = [pk for pk, _, _ in rows]
                pointers = {rec for _, rec, _ in rows if rec}
                if pointers:
                    unlinked += _unlink(pointers, set(pks), subjects)
                deleted += _delete_rows(pks)
                by_type.update(event_type for _, _, event_type in rows)
            if progress:
                progress("events", min(deleted, total), total)
            if len(rows) < batch_size:  # the piece's last batch: a further query would find nothing
                break
        if progress and done < len(pieces):
            total = max(deleted + 1, deleted * len(pieces) // done)
    if progress and deleted != total:
        progress("events", deleted, deleted)  # the bar ends full
    return deleted, dict(by_type), unlinked


def _delete_rows(pks: list[int]) -> int:
    """DELETE their events by primary key, in plain SQL: Django's IN lookup spends more time per id in Python than
    the statement spends in the database. The ORM's delete (and its signals) when someone listens for them."""
    if pre_delete.has_listeners(Event) or post_delete.has_listeners(Event):
        return Event.objects.filter(pk__in=pks).delete()[0]
    table = connection.ops.quote_name(Event._meta.db_table)
    column = connection.ops.quote_name(Event._meta.pk.column)
    marks = ", ".join(["%s"] * len(pks))
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", pks)  # noqa: S608 - quoted names, no data
        return cursor.rowcount


def _unlink(pointers: set[str], batch: set[int], subjects: Subjects) -> int:
    """Blank the recommendation id on someone else's rows that name a block shown to these shoppers (their
    impression's or click's id); their own rows go anyway, so they are left to the delete."""
    others = [
        pk
        for pk, shopper, user_id, visitor_id in Event.objects.filter(recommendation_id__in=pointers)
        .order_by()
        .values_list("pk", "shopper", "user_id", "visitor_id")
        if pk not in batch and not subjects.names(shopper, user_id, visitor_id)
    ]
    return Event.objects.filter(pk__in=others).update(recommendation_id="") if others else 0


def _delete_lists(shoppers: list[str], progress: Progress | None) -> int:
    """Their stored lists in every set: a scan of the lists per `LIST_SUBJECTS_PER_STATEMENT` shoppers, each in its
    own short transaction (only their own rows are locked, and only while it runs)."""
    deleted = 0
    step = LIST_SUBJECTS_PER_STATEMENT
    for start in range(0, len(shoppers), step):
        with transaction.atomic():
            deleted += StoredList.objects.filter(subject__in=shoppers[start : start + step]).delete()[0]
        if progress and len(shoppers) > step:
            progress("stored lists", min(start + step, len(shoppers)), len(shoppers))
    return deleted


def _delete_email_data(user_ids: list[str]) -> tuple[int, int]:
    """Their e-mail messages (whom, when, which products, the key naming them) and their marketing e-mail answer:
    an erased shopper gets no e-mail until they opt in again. Returns (messages, consents) deleted."""
    messages = consents = 0
    step = LIST_SUBJECTS_PER_STATEMENT
    for start in range(0, len(user_ids), step):
        piece = user_ids[start : start + step]
        with transaction.atomic():
            messages += Message.objects.filter(user_id__in=piece).delete()[0]
            consents += EmailConsent.objects.filter(user_id__in=piece).delete()[0]
    return messages, consents


def delete_cache_keys(shoppers: Iterable[str]) -> int | None:
    """Delete every shared-cache key that names these shoppers; returns how many, or None when the cache backend
    cannot be searched (memcached, a database cache): then the blocks are only stale (their version was moved) and
    expire within BLOCK_CACHE_SECONDS.

    For a few shoppers each of their keys and patterns is looked up; for more than `FEW_SHOPPERS` the cache is walked
    once per key family (`keys.ShopperKeys`) and each key checked against all of them.
    """
    cache = caches["default"]
    shoppers = list(shoppers)
    # Django's own backends, when the app's keys sit behind one fixed prefix (no custom KEY_FUNCTION); django-redis
    # (iter_keys) takes its prefix off by itself.
    walkable = isinstance(cache, RedisCache | LocMemCache) and cache.make_key("k") == f"{cache.make_key('')}k"
    if len(shoppers) > FEW_SHOPPERS and (walkable or hasattr(cache, "iter_keys")):
        return _delete_many_shoppers_keys(cache, keys.ShopperKeys(shoppers))
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
        return _redis_delete(client, names)
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


def _delete_many_shoppers_keys(cache: Any, index: keys.ShopperKeys) -> int:
    """One walk of each key family of a searchable cache, deleting what names one of the shoppers."""
    if not isinstance(cache, RedisCache | LocMemCache):  # django-redis: its iter_keys gives keys without the prefix
        found = [k for family in index.FAMILIES for k in cache.iter_keys(family) if k in index]
        return int(cache.delete_many(found) or 0) if found else 0
    head = cache.make_key("")  # the cache's own "<KEY_PREFIX>:<VERSION>:" before every key the app spells
    if isinstance(cache, LocMemCache):
        with cache._lock:
            found = [k for k in list(cache._cache) if k.startswith(head) and k[len(head) :] in index]
            return sum(1 for k in found if cache._delete(k))
    client = cache._cache.get_client(None, write=True)
    names = []
    for family in index.FAMILIES:
        for name in client.scan_iter(match=cache.make_key(family), count=1000):
            text = name.decode() if isinstance(name, bytes) else name
            if text.startswith(head) and text[len(head) :] in index:
                names.append(name)
    return _redis_delete(client, names)


def _redis_delete(client: Any, names: list[Any]) -> int:
    """DEL in pipelines: 500 keys a command, one round trip per 50,000."""
    removed = 0
    for start in range(0, len(names), 50_000):
        with client.pipeline(transaction=False) as pipe:
            for at in range(start, min(start + 50_000, len(names)), 500):
                pipe.delete(*names[at : at + 500])
            removed += sum(pipe.execute())
    return removed


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

    clock = _Clock()
    subjects = resolve(user_ids, visitor_ids)
    hashes = sorted(subject_hashes("user", subjects.user_ids) + subject_hashes("visitor", subjects.visitor_ids))
    record = ErasureRequest.objects.create(
        requested_by=requested_by[:150],
        via=via[:20],
        subjects=len(subjects.user_ids) + len(subjects.visitor_ids),
        subject_hashes=hashes,
    )
    shoppers = subjects.shoppers
    clock.lap("find")
    events, by_type, unlinked = _delete_events(subjects, batch_size, progress)
    clock.lap("events")
    lists = _delete_lists(shoppers, progress)
    clock.lap("stored_lists")
    messages, email_consents = _delete_email_data(subjects.user_ids)
    clock.lap("email")
    cache_keys = delete_cache_keys(shoppers)
    clock.lap("cache")
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
        "email_messages": messages,
        "email_consents": email_consents,
        "cache_keys": cache_keys,
        "linked_visitors": len(subjects.linked_visitor_ids),
        "shopper_keys": len(shoppers),
        "seconds": clock.laps,  # per stage: where a long erasure spent its time
    }
    record.finished_at = timezone.now()
    record.save(update_fields=["counts", "finished_at"])
    logger.info("erasure #%s by %r via %s: %s", record.pk, requested_by, via, record.counts)
    return record


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self.last, 3)
        self.last = now


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
