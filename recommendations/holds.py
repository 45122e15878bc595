"""What a process keeps in memory between requests, as objects with an owner, a size bound and a reset.

A web process keeps a few things it would otherwise read on every page: the active set's product lists, product
profiles, the rules' bundle. Each is a `Hold`: a least-recently-used map of at most `max_size` entries, tagged with a
*generation* (the active set id, the profiles' version, ...) that says what its entries are valid for. Its owner
starts it over when the generation moves (`start`), or moves it on and drops only what changed (`advance`); past its
size it forgets the entries used longest ago instead of starting over. Every hold is registered, so `clear_all()`
empties every one at once: the test suite calls it between tests, so no test sees what another left behind.

Readers and writers may pass the generation they work under: a read at another generation finds nothing, a write at
another generation is dropped, so a request that began before the owner moved the hold on cannot put back an old
row. The holds are shared by a process's threads; each operation takes the hold's lock for its few dict steps only
(never across a database or cache read).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

ANY: Any = object()  # the default `generation`: whatever the hold is at

_registry: weakref.WeakSet[Hold[Any, Any]] = weakref.WeakSet()


class Hold(Generic[K, V]):
    """A bounded least-recently-used map kept by one process, valid for one generation.

    `name` and `owner` say what it is and which module keeps it (for a reader of `holds()`, a log or a debugger).
    `max_age` (seconds), if given, makes `expired` true that long after the hold last started over: an owner that
    cannot learn of every change starts over then.
    """

    def __init__(self, name: str, max_size: int, *, owner: str = "", max_age: float | None = None) -> None:
        if max_size < 1:
            raise ValueError(f"a hold keeps at least one entry, not {max_size}")
        self.name = name
        self.owner = owner
        self.max_size = max_size
        self.max_age = max_age
        self._rows: OrderedDict[K, V] = OrderedDict()
        self._generation: Any = None
        self._started = time.monotonic()
        self._lock = threading.Lock()
        _registry.add(self)

    def __repr__(self) -> str:
        return f"<Hold {self.name!r} of {self.owner or '?'}: {len(self._rows)}/{self.max_size} at {self._generation!r}>"

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        """Whether the hold has `key`, without counting as a use."""
        return key in self._rows

    @property
    def generation(self) -> Any:
        """What the entries are valid for (None: nothing yet, or cleared)."""
        return self._generation

    @property
    def expired(self) -> bool:
        """Past `max_age` since the hold last started over (never, without a max_age)."""
        return self.max_age is not None and time.monotonic() - self._started > self.max_age

    # -- reads ----------------------------------------------------------------------------------------------------

    def get(self, key: K, default: V | None = None, *, generation: Any = ANY) -> V | None:
        """The entry for `key` (now the most recently used), or `default`; `default` too at another generation."""
        with self._lock:
            if generation is not ANY and generation != self._generation:
                return default
            try:
                self._rows.move_to_end(key)
            except KeyError:
                return default
            return self._rows[key]

    def get_many(self, keys: Iterable[K], *, generation: Any = ANY) -> dict[K, V]:
        """The entries the hold has of `keys` (now the most recently used), in the order asked; none at another
        generation."""
        found: dict[K, V] = {}
        with self._lock:
            if generation is not ANY and generation != self._generation:
                return found
            rows = self._rows
            for key in keys:
                if key in rows:
                    rows.move_to_end(key)
                    found[key] = rows[key]
        return found

    # -- writes ---------------------------------------------------------------------------------------------------

    def put(self, key: K, value: V, *, generation: Any = ANY) -> None:
        """Keep `value` for `key`, forgetting the least recently used past `max_size`; dropped at another generation."""
        self.put_many(((key, value),), generation=generation)

    def put_many(self, items: Iterable[tuple[K, V]], *, generation: Any = ANY) -> None:
        """Keep every (key, value), as `put` does, under one lock."""
        with self._lock:
            if generation is not ANY and generation != self._generation:
                return
            rows = self._rows
            for key, value in items:
                rows[key] = value
                rows.move_to_end(key)
            while len(rows) > self.max_size:
                rows.popitem(last=False)

    def discard(self, key: K) -> None:
        """Forget `key`, if held."""
        with self._lock:
            self._rows.pop(key, None)

    # -- generations ----------------------------------------------------------------------------------------------

    def start(self, generation: Any) -> None:
        """Start over, empty, at `generation` (and restart the age `expired` counts from)."""
        with self._lock:
            self._rows = OrderedDict()
            self._generation = generation
            self._started = time.monotonic()

    def start_unless_at(self, generation: Any) -> None:
        """Start over at `generation` unless the hold is already at it (and not expired)."""
        if self._generation != generation or self.expired:
            with self._lock:
                if self._generation != generation or self.expired:
                    self._rows = OrderedDict()
                    self._generation = generation
                    self._started = time.monotonic()

    def advance(self, since: Any, generation: Any, changed: Iterable[K]) -> None:
        """Move from generation `since` to `generation`, dropping the `changed` entries and keeping the rest (and the
        age). If another thread moved the hold meanwhile to anything but `generation`, start over at `generation`."""
        with self._lock:
            if self._generation == generation:
                return
            if self._generation != since:
                self._rows = OrderedDict()
                self._generation = generation
                self._started = time.monotonic()
                return
            rows = self._rows
            for key in changed:
                rows.pop(key, None)
            self._generation = generation

    def clear(self) -> None:
        """Forget everything, the generation included: as a fresh process would start."""
        with self._lock:
            self._rows = OrderedDict()
            self._generation = None
            self._started = time.monotonic()


def holds() -> list[Hold[Any, Any]]:
    """Every hold alive in this process."""
    return list(_registry)


def clear_all() -> None:
    """Empty every hold in this process (the test suite does between tests)."""
    for hold in holds():
        hold.clear()
