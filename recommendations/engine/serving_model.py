"""The model that serves now: which training run, loaded once per process and hash-checked on load.

Precompute and the near-real-time refresh both score through here, with the serving model and with the model
versions a running experiment compares with it (`load_run_model`). A loaded model is cached per process, keyed by
its run, its artefact hash and the catalog it was aligned to, so a rollback, a new model or a new product is picked
up on the next call while a busy worker does not reload 50k item vectors per shopper; a few runs are kept at once,
so scoring one shopper with the serving model and with their experiment arm's model does not reload either.
A missing or altered artefact raises ArtefactError: callers keep the lists they have rather than serve it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from django.db.models import Count, Max

from recommendations.engine import artefacts, dataset
from recommendations.engine.base import Recommender
from recommendations.models import ProductProfile, TrainingRun


@dataclass
class ServedModel:
    run_id: int
    sha256: str
    chosen: str
    item_ids: list[str]
    model: Recommender
    category_of_item: np.ndarray  # -1 for none
    active: np.ndarray  # bool: may be recommended


_lock = threading.Lock()
_cache: dict[tuple[int, str, int, str], ServedModel] = {}
# The serving model and the few versions an experiment compares with it.
MAX_CACHED = 4


def serving_run() -> TrainingRun | None:
    """The training run whose model serves, if any has an artefact."""
    return TrainingRun.objects.filter(is_serving=True).exclude(artefact_path="").first()


def load_serving_model(item_ids: list[str] | None = None) -> ServedModel | None:
    """The serving model aligned to the catalog (`item_ids` in product id order; read from profiles if None)."""
    run = serving_run()
    if run is None:
        return None
    return load_run_model(run, item_ids)


def load_run_model(run: TrainingRun, item_ids: list[str] | None = None) -> ServedModel:
    """`run`'s model aligned to the catalog, serving or not (an experiment arm's); ArtefactError if it cannot load."""
    if not run.has_artefact:
        raise artefacts.ArtefactError(f"training run #{run.pk} has no model")
    catalog = ProductProfile.objects.aggregate(n=Count("pk"), changed=Max("updated_at"))
    key = (run.pk, run.artefact_sha256, int(catalog["n"] or 0), str(catalog["changed"]))
    with _lock:
        cached = _cache.get(key)
    if cached is not None and (item_ids is None or cached.item_ids == list(item_ids)):
        return cached
    rows = dataset.load_profile_rows()
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
        # One entry per run (its older hash or catalog goes), and only the newest few runs.
        for stale in [k for k in _cache if k[0] == run.pk]:
            del _cache[stale]
        while len(_cache) >= MAX_CACHED:
            del _cache[next(iter(_cache))]
        _cache[key] = served
    return served


def forget() -> None:
    """Drop the cached model (tests, and after an artefact is replaced on disk)."""
    with _lock:
        _cache.clear()
