"""Every shared-cache key and stored-list name the app spells, built in one place.

A key read in one module and deleted in another must be the same string; writing each one once here means a
rename cannot leave a reader behind. Nothing here imports the rest of the app.
"""

from __future__ import annotations

import hashlib
import re
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
