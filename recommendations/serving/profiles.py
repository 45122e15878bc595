"""Product profiles as serving reads them: once per render pass, and between pages from a process hold kept in step
with `catalog`'s profiles version, so a built block reads none from the database."""

from __future__ import annotations

from collections.abc import Iterable

from recommendations import catalog, serving_sql
from recommendations.holds import Hold
from recommendations.lists import store
from recommendations.models import ProductProfile

PROFILE_HOLD_SECONDS = 600  # a process keeps profiles at most this long: heals a write made around catalog
PROFILE_HOLD_MAX = 50_000  # profiles a process keeps, least recently used out first (~24 MB, measured)

Profile = store.Profile  # (category, brand, active, in_stock, name, price), by name


def _profiles(product_ids: Iterable[str], also: Iterable[str] = ()) -> dict[str, Profile]:
    """Profiles of `product_ids` (those that have one), read with `also`'s in one query; a pass keeps them all.
    `also` may be a generator: it is not read when the pass knows every one of `product_ids`."""
    ids = list(dict.fromkeys(product_ids))
    if not ids:
        return {}
    memo = store.current_pass.get()
    known = memo.profiles if memo is not None else {}
    if memo is not None and all(pid in known for pid in ids):  # `also` is only read when a query goes out anyway
        return {pid: profile for pid in ids if (profile := known[pid]) is not None}
    wanted = [pid for pid in dict.fromkeys([*ids, *also]) if pid not in known]
    version = _hold_profiles_at(memo.profiles_version) if wanted and memo is not None and memo.profiles_version else 0
    if version:
        known.update(PROFILE_HOLD.get_many(wanted, generation=version))
        wanted = [pid for pid in wanted if pid not in known]
    if wanted:
        connection = serving_sql.usable(ProductProfile)
        if connection is not None:
            rows = serving_sql.profiles(connection, wanted)
        else:
            rows = ProductProfile.objects.filter(product_id__in=wanted).values_list(
                "product_id", "category", "brand", "active", "in_stock", "name", "price"
            )
        found = {row[0]: Profile._make(row[1:]) for row in rows}  # (product, category, ..., price)
        if memo is None:
            return {pid: found[pid] for pid in ids if pid in found}
        for pid in wanted:
            known[pid] = found.get(pid)
        if version:
            PROFILE_HOLD.put_many([(pid, known[pid]) for pid in wanted], generation=version)
    return {pid: profile for pid in ids if (profile := known.get(pid)) is not None}


PROFILE_HOLD: Hold[str, Profile | None] = Hold(
    "profiles", PROFILE_HOLD_MAX, owner=__name__, max_age=PROFILE_HOLD_SECONDS
)
"""The profiles this process keeps between pages (None: the product has none), as of a profiles version.

Profiles change rarely and every block reads dozens, so a process keeps what it read and a built block reads none
from the database. Its generation is `catalog`'s profiles version (`_hold_profiles_at`); past PROFILE_HOLD_MAX
profiles it forgets those used longest ago."""


def _hold_profiles_at(version: int) -> int:
    """Bring the profile hold to `version` (read with the block cache, in one round trip); the generation to read and
    write it under.

    When the version moved, it drops the products the writes since touched (one cache read:
    `catalog.profile_changes`), or everything when that cannot tell; it starts over PROFILE_HOLD_SECONDS after it
    last did. A reader that began before a catch-up reads and writes under the old version, so it finds nothing and
    cannot put back an old row.
    """
    hold = PROFILE_HOLD
    held, fresh = hold.generation, not hold.expired
    if held == version and fresh:
        return version
    changed = catalog.profile_changes(held, version) if held and fresh else None
    if changed is None:
        hold.start(version)
    else:
        hold.advance(held, version, changed)
    return version
