"""Every shared-cache key and stored-list name the app spells, built in one place.

A key read in one module and deleted in another must be the same string; writing each one once here means a
rename cannot leave a reader behind. Nothing here imports the rest of the app.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

PREFIX = "recommendations"
ACTIVE_SET = f"{PREFIX}:active_set"  # the active recommendation set's id
EXPERIMENTS_RUNNING = f"{PREFIX}:experiments:running"  # the running experiments' variants
RULES_PLACEMENTS = f"{PREFIX}:rules:placements"  # the Placement rows
RULES_COLD_START = f"{PREFIX}:rules:cold_start"
RULES_MERCHANDISING = f"{PREFIX}:rules:merchandising"
RULES_VERSION = f"{PREFIX}:rules:version"  # moved by every save of a tunable; stamped on cached blocks
RULES_SOURCE = f"{PREFIX}:rules:source:"  # + a digest of (rule, its update, category, limit): a rule's products
PROFILES_VERSION = f"{PREFIX}:profiles:version"  # a counter, moved by every write of profiles
PROFILES_CHANGE = f"{PREFIX}:profiles:change:"  # + a counter value: the product ids that write touched
HEALTH_PROBE = f"{PREFIX}:health:probe:"  # + a random token: the cache check writes it and reads it back
ARM_LIST_SEPARATOR = "@run"
# DRF's throttle key for the API's scopes (api/throttling.py); the ident is a shopper key, "ip:<address>" or
# "write-key", and the throttle appends ":<window>".
THROTTLE = "throttle:%(scope)s:%(ident)s"

_UNSAFE_KEY_CHARACTER = re.compile(r"[\x00-\x20\s]")  # whitespace or control: not allowed in a cache key


def cache_key(*parts: Any) -> str:
    """`recommendations:<parts joined by ':'>`, hashed when too long or unsafe for memcached-style backends."""
    raw = ":".join(str(p) for p in parts)
    if len(raw) > 200 or _UNSAFE_KEY_CHARACTER.search(raw):
        raw = hashlib.sha256(raw.encode()).hexdigest()
    return f"{PREFIX}:{raw}"


_GLOB_CHARACTER = re.compile(r"[*?\[\]\\]")


def _shopper_part(shopper: str) -> str:
    """The shopper as it sits inside a key: as is when short and safe, else a digest, so that every key of one
    shopper starts the same way and an erasure can find them all by prefix (`shopper_key_patterns`)."""
    if len(shopper) <= 80 and not _UNSAFE_KEY_CHARACTER.search(shopper) and not _GLOB_CHARACTER.search(shopper):
        return shopper
    return "h" + hashlib.sha256(shopper.encode()).hexdigest()[:40]


def block(shopper: str, *parts: Any) -> str:
    """A cached block: `recommendations:block:<shopper>:<the rest, hashed when too long or unsafe>`."""
    rest = ":".join(str(p) for p in parts)
    if len(rest) > 120 or _UNSAFE_KEY_CHARACTER.search(rest):
        rest = hashlib.sha256(rest.encode()).hexdigest()
    return f"{PREFIX}:block:{_shopper_part(shopper)}:{rest}"


def shopper_version(shopper: str) -> str:
    """The stamp a shopper's cached blocks must carry; every stored event of theirs moves it."""
    return cache_key("shopper", shopper)


def shopper_key_patterns(shopper: str) -> tuple[list[str], list[str]]:
    """Every shared-cache key that names this shopper: (exact keys, glob patterns), the patterns escaped for
    Redis' SCAN MATCH and fnmatch alike. The privacy erasure deletes them; a key added here is erased too."""
    exact = [shopper_version(shopper), refresh_pending(shopper)]
    patterns = [f"{PREFIX}:block:{_shopper_part(shopper)}:*"]
    if not _GLOB_CHARACTER.search(shopper) and not _UNSAFE_KEY_CHARACTER.search(shopper):
        patterns.append(THROTTLE % {"scope": "*", "ident": shopper} + ":*")
    return exact, patterns


_BLOCK_HEAD = f"{PREFIX}:block:"
_THROTTLE_HEAD = THROTTLE.split("%", 1)[0]  # "throttle:"


class ShopperKeys:
    """Every cache key of many shoppers at once: `key in ShopperKeys(shoppers)` is True when a key (as spelt here,
    without the cache's own prefix) is one of `shopper_key_patterns(s)` of one of them, exact or matching a pattern.

    An erasure of thousands of shoppers walks the cache once per family in `FAMILIES` and asks this of each key found,
    where a SCAN per shopper and pattern would walk the whole cache thousands of times, and a DEL per exact key would
    name keys that mostly do not exist. Kept next to the patterns so that the two change together (a test checks that
    they agree).
    """

    FAMILIES = (f"{PREFIX}:*", f"{_THROTTLE_HEAD}*")  # every key shopper_key_patterns names or matches falls in one

    def __init__(self, shoppers: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.parts: set[str] = set()
        self.idents: set[str] = set()
        for shopper in shoppers:
            self.exact.update((shopper_version(shopper), refresh_pending(shopper)))
            self.parts.add(_shopper_part(shopper))
            if not _GLOB_CHARACTER.search(shopper) and not _UNSAFE_KEY_CHARACTER.search(shopper):
                self.idents.add(shopper)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key in self.exact:
            return True
        if key.startswith(_BLOCK_HEAD):  # "<head><part>:*": the part is what comes before one of the colons
            rest = key[len(_BLOCK_HEAD) :]
            at = rest.find(":")
            while at != -1:
                if rest[:at] in self.parts:
                    return True
                at = rest.find(":", at + 1)
            return False
        if key.startswith(_THROTTLE_HEAD):  # "throttle:*:<shopper>:*": between two colons, after the head
            rest = key[len(_THROTTLE_HEAD) :]  # "<scope>:<shopper>:<window>"; the scope's "*" may be empty
            colons = [at for at, character in enumerate(rest) if character == ":"]
            return any(rest[a + 1 : b] in self.idents for i, a in enumerate(colons) for b in colons[i + 1 :])
        return False


def rules_explore(max_age_days: int, limit: int) -> str:
    """The exploration pool of new products (cold-start slots) for an age limit and a size."""
    return f"{PREFIX}:rules:explore:{max_age_days}:{limit}"


def refresh_pending(shopper: str) -> str:
    """Set while a shopper's list refresh waits out its debounce window."""
    return f"{PREFIX}:refresh:{shopper}"


def arm_list(placement: str, training_run_id: int) -> str:
    """The stored-list name of an experiment arm that serves a given model version: "for_you@run<id>"."""
    return f"{placement}{ARM_LIST_SEPARATOR}{training_run_id}"


def base_placement(name: str) -> str:
    """The placement a stored list stands in for ("for_you" for "for_you@run7")."""
    return name.split("@", 1)[0]
