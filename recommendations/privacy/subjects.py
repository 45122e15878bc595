"""Whom a privacy request is about: the ids it names, checked, and every shopper key the app files them under.

A user id brings the visitor ids that were merged into the account at login (the events that carry both), since
those are the same person's browsing before they logged in; a visitor id is that browser alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from django.conf import settings
from django.db.models import Q
from django.utils.crypto import salted_hmac
from django.utils.encoding import force_bytes
from django.utils.translation import gettext as _

from recommendations.models import Event, shopper_key

MAX_ID_LENGTH = 64  # Event.user_id and Event.visitor_id
MAX_IDS = 100_000  # one request; a bigger job is several requests (or the command's file, read in parts)
# Ids one statement names. At 1,000 PostgreSQL (random_page_cost 4) planned a scan of the whole event table for each
# statement instead of index lookups (bench/erase.py, docs/benchmarks.md).
IDS_PER_STATEMENT = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
HASH_SALT = "recommendations.privacy.subject"


class InvalidSubjects(ValueError):
    """A request's ids cannot be read; `field` names the part at fault ("user_ids" or "visitor_ids")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class Subjects:
    """The ids a request names and what they lead to."""

    user_ids: list[str]
    visitor_ids: list[str]
    linked_visitor_ids: list[str] = field(default_factory=list)  # merged into a named user at login

    @property
    def all_visitor_ids(self) -> list[str]:
        return sorted({*self.visitor_ids, *self.linked_visitor_ids})

    @property
    def shoppers(self) -> list[str]:
        """Every shopper key (u:<id>, v:<id>) their events, lists and cache keys are filed under."""
        return sorted({shopper_key(u, "") for u in self.user_ids} | {shopper_key("", v) for v in self.all_visitor_ids})

    def events_filter(self) -> Q:
        """Their events: filed under their shopper keys, or naming their user id or one of their visitor ids."""
        q = Q(shopper__in=self.shoppers)
        if self.user_ids:
            q |= Q(user_id__in=self.user_ids)
        if self.all_visitor_ids:
            q |= Q(visitor_id__in=self.all_visitor_ids)
        return q

    def events_filters(self, size: int) -> Iterator[Q]:
        """`events_filter` in pieces of at most `size` ids whose union is the whole: a piece is a few index lookups,
        where one filter naming 100,000 ids is a statement of megabytes that PostgreSQL plans as a scan."""
        people = [(u, "") for u in self.user_ids] + [("", v) for v in self.all_visitor_ids]
        for start in range(0, len(people), size):
            users = [u for u, _ in people[start : start + size] if u]
            visitors = [v for _, v in people[start : start + size] if v]
            q = Q(shopper__in=[shopper_key(u, "") for u in users] + [shopper_key("", v) for v in visitors])
            if users:
                q |= Q(user_id__in=users)
            if visitors:
                q |= Q(visitor_id__in=visitors)
            yield q

    def names(self, shopper: str, user_id: str, visitor_id: str) -> bool:
        """Whether an event with these ids is theirs (what `events_filter` selects), tested in Python."""
        return shopper in self._shopper_set or user_id in self._user_set or visitor_id in self._visitor_set

    @cached_property
    def _shopper_set(self) -> frozenset[str]:
        return frozenset(self.shoppers)

    @cached_property
    def _user_set(self) -> frozenset[str]:
        return frozenset(self.user_ids)

    @cached_property
    def _visitor_set(self) -> frozenset[str]:
        return frozenset(self.all_visitor_ids)


def clean_ids(values: object, name: str) -> list[str]:
    """A list of ids as given (strings, or integers for user ids), checked; duplicates dropped, order kept."""
    if values is None:
        return []
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidSubjects(name, _("must be a list of ids"))
    ids: dict[str, None] = {}
    for value in values:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidSubjects(name, _("every id must be a string"))
        text = str(value).strip()
        if not text or len(text) > MAX_ID_LENGTH or _CONTROL.search(text):
            raise InvalidSubjects(
                name, _("every id must be 1 to %(most)s printable characters") % {"most": MAX_ID_LENGTH}
            )
        ids[text] = None
        if len(ids) > MAX_IDS:
            raise InvalidSubjects(name, _("at most %(most)s ids in one request") % {"most": MAX_IDS})
    return list(ids)


def resolve(user_ids: object = None, visitor_ids: object = None) -> Subjects:
    """Check the ids and find the visitors merged into the users; raises InvalidSubjects naming the bad field."""
    users = clean_ids(user_ids, "user_ids")
    visitors = clean_ids(visitor_ids, "visitor_ids")
    if not users and not visitors:
        raise InvalidSubjects("user_ids", _("name at least one user id or visitor id"))
    linked: set[str] = set()
    for start in range(0, len(users), IDS_PER_STATEMENT):
        linked.update(
            Event.objects.filter(user_id__in=users[start : start + IDS_PER_STATEMENT])
            .exclude(visitor_id="")
            .order_by()
            .values_list("visitor_id", flat=True)
            .distinct()
        )
    return Subjects(users, visitors, sorted(linked - set(visitors)))


def subject_hash(kind: str, value: str) -> str:
    """A keyed hash of one id (HMAC-SHA256 under SECRET_KEY): the audit can prove an id was erased, not name it."""
    return salted_hmac(HASH_SALT, f"{kind}:{value}", algorithm="sha256").hexdigest()


def subject_hashes(kind: str, values: Iterable[str]) -> list[str]:
    """`subject_hash` of many ids: the key derived once, as salted_hmac derives it on every call (100,000 ids in a
    fifth of the time)."""
    key = hashlib.sha256(force_bytes(HASH_SALT) + force_bytes(settings.SECRET_KEY)).digest()
    return [hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest() for value in values]
