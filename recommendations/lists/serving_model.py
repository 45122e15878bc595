"""The model that serves now: which training run, loaded once per process and hash-checked on load.

Precompute and the near-real-time refresh both score through here, with the serving model and with the model
versions a running experiment compares with it (`load_run_model`). A loaded model is cached per process, keyed by
its run, its artefact hash and the catalog it was aligned to, so a rollback, a new model or a new product is picked
up on the next call while a busy worker does not reload 50k item vectors per shopper; a few runs are kept at once,
so scoring one shopper with the serving model and with their experiment arm's model does not reload either.
A missing or altered artefact raises ArtefactError: callers keep the lists they have rather than serve it.

A caller that loads on every shopper event (the near-real-time refresh) asks for a refusal to be remembered: until
the artefact's files change or REFUSAL_SECONDS pass, the run is refused again without a load (RefusedArtefact),
instead of re-hashing a broken artefact and warning once per event.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.db.models import Count, Max

from recommendations.engine import dataset
from recommendations.engine.base import Recommender
from recommendations.models import ProductProfile, TrainingRun
from recommendations.training import artefacts, loading


@dataclass
class ServedModel:
    run_id: int
    sha256: str
    chosen: str
    item_ids: list[str]
    model: Recommender
    category_of_item: np.ndarray  # -1 for none
    active: np.ndarray  # bool: may be recommended


MAX_CACHED = 4
"""How many loaded models a worker keeps: the serving model and the few versions a running experiment compares
with it, so one shopper's refresh scores with both without a reload. Each holds every item's vectors (tens of MB
for a large catalog), so this bound is the worker's model memory: an evicted model is referenced nowhere else
and is freed. Raise it only with the worker's memory limit."""

REFUSAL_SECONDS = 600.0
"""How long a refused artefact is refused again without a load when its files look unchanged: a repair that keeps
every file's size and mtime (a copy with `cp -p`) is still picked up within this time, and a broken artefact costs
a load attempt once per this time per worker instead of once per shopper event."""


class RefusedArtefact(artefacts.ArtefactError):
    """A run refused earlier (and remembered) is refused again: the caller already heard why, once."""


@dataclass(frozen=True)
class _Refusal:
    # Only the reason is kept, not the exception: its traceback would hold the catalog's features alive.
    fingerprint: tuple
    retry_at: float
    reason: str


_lock = threading.Lock()
_cache: dict[tuple[int, str, int, str], ServedModel] = {}
_refused: dict[int, _Refusal] = {}


def serving_run() -> TrainingRun | None:
    """The training run whose model serves, if any has an artefact."""
    return TrainingRun.objects.filter(is_serving=True).exclude(artefact_path="").first()


def load_serving_model(item_ids: list[str] | None = None, *, remember_refusal: bool = False) -> ServedModel | None:
    """The serving model aligned to the catalog (`item_ids` in product id order; read from profiles if None)."""
    run = serving_run()
    if run is None:
        return None
    return load_run_model(run, item_ids, remember_refusal=remember_refusal)


def artefact_fingerprint(run: TrainingRun) -> tuple:
    """What changes when `run`'s artefact is repaired or replaced (its registered hash, the directory's identity,
    each file's name, size and mtime), read with a few stats instead of hashing every file."""
    directory = Path(run.artefact_path) if run.artefact_path else None
    if directory is None or not directory.is_dir():
        return (run.artefact_path, run.artefact_sha256)
    try:
        top = directory.stat()
        files = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            stat = path.stat()
            files.append((path.relative_to(directory).as_posix(), stat.st_size, stat.st_mtime_ns))
    except OSError:
        # Being rewritten right now: a value of its own, so the next look sees a change and tries again.
        return (run.artefact_path, run.artefact_sha256, "unreadable", time.monotonic())
    return (run.artefact_path, run.artefact_sha256, top.st_ino, top.st_mtime_ns, tuple(files))


def load_run_model(
    run: TrainingRun, item_ids: list[str] | None = None, *, remember_refusal: bool = False
) -> ServedModel:
    """`run`'s model aligned to the catalog, serving or not (an experiment arm's); ArtefactError if it cannot load.

    With `remember_refusal` (a caller that loads per shopper event), a refusal is remembered per run: until the
    artefact's fingerprint changes or REFUSAL_SECONDS pass, the run raises RefusedArtefact without a load, and a
    retry that fails again raises RefusedArtefact too, so the caller warns once per breakage, not per event. The
    first refusal raises a plain ArtefactError. A successful load (by any caller) forgets the refusal.
    """
    fingerprint: tuple | None = None
    if remember_refusal:
        with _lock:
            refusal = _refused.get(run.pk)
        if refusal is not None:
            fingerprint = artefact_fingerprint(run)
            if time.monotonic() < refusal.retry_at and fingerprint == refusal.fingerprint:
                raise RefusedArtefact(refusal.reason)
    try:
        served = _load_run_model(run, item_ids)
    except artefacts.ArtefactError as exc:
        if not remember_refusal:
            raise
        # Read after the attempt only on a first refusal, so a cached or good model costs no stat; a repair that lands
        # during the failed attempt is then picked up when the refusal expires.
        if fingerprint is None:
            fingerprint = artefact_fingerprint(run)
        with _lock:
            known = run.pk in _refused
            _refused[run.pk] = _Refusal(fingerprint, time.monotonic() + REFUSAL_SECONDS, str(exc))
        if known:
            raise RefusedArtefact(str(exc)) from None
        raise
    with _lock:
        _refused.pop(run.pk, None)
    return served


def _load_run_model(run: TrainingRun, item_ids: list[str] | None) -> ServedModel:
    if not run.has_artefact:
        raise artefacts.ArtefactError(f"training run #{run.pk} has no model")
    catalog = ProductProfile.objects.aggregate(n=Count("pk"), changed=Max("updated_at"))
    key = (run.pk, run.artefact_sha256, int(catalog["n"] or 0), str(catalog["changed"]))
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            # Least recently used goes first: the serving model, used on every refresh, stays.
            _cache[key] = _cache.pop(key)
    if cached is not None and (item_ids is None or cached.item_ids == list(item_ids)):
        return cached
    rows = loading.load_profile_rows()
    ids = [r[0] for r in rows]
    if item_ids is not None and list(item_ids) != ids:
        # The caller's catalog view and the profiles differ (a product added in between): align to the caller's.
        by_id = {r[0]: r for r in rows}
        rows = [by_id[i] for i in item_ids if i in by_id]
        ids = [r[0] for r in rows]
    features = dataset.item_features(rows)
    model = artefacts.load_recommender(run.artefact_path, run.artefact_sha256, features)
    inactive = set(ProductProfile.objects.filter(active=False).values_list("product_id", flat=True))
    served = ServedModel(
        run_id=run.pk,
        sha256=run.artefact_sha256,
        chosen=run.chosen,
        item_ids=ids,
        model=model,
        category_of_item=features.category.astype(np.int64) - 1,
        active=np.array([i not in inactive for i in ids], dtype=bool),
    )
    with _lock:
        # One entry per run (its older hash or catalog goes), and only the few most recently used runs.
        for stale in [k for k in _cache if k[0] == run.pk]:
            del _cache[stale]
        while len(_cache) >= MAX_CACHED:
            del _cache[next(iter(_cache))]
        _cache[key] = served
    return served


def forget() -> None:
    """Drop the cached models and remembered refusals (tests, and after an artefact is replaced on disk)."""
    with _lock:
        _cache.clear()
        _refused.clear()
