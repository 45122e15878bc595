"""Near-real-time refresh of one shopper's for_you list, between full precomputes.

A shopper who browses should see the effect on the next pages, not after the hourly precompute. This recomputes
one shopper's list from their recent events and the active set's stored `similar` lists, with the same scoring
as the batch engine (Σ over the shopper's items i of damped weight(i) x sim(i, j), bought items left out,
reason = the item that contributed most), and replaces that one StoredList row in the active set.

A shopper whom a running for_you experiment puts in an arm serving another model version also gets that arm's list
("for_you@run<id>") rescored: otherwise the test would compare the control's live lists with the arm's hourly ones.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime

import numpy as np
import scipy.sparse as sp
from django.db import transaction

from recommendations import keys
from recommendations.conf import rec_settings
from recommendations.engine import reasons
from recommendations.engine.dataset import (
    MIN_CELL_WEIGHT,
    clean_log,
    event_log_from_rows,
    loaded_event_types,
    micros,
    to_interactions,
)
from recommendations.engine.model_lists import recommend_chunks
from recommendations.experiments import assignment
from recommendations.lists import serving_model
from recommendations.lists.serving_model import (
    RefusedArtefact,
    ServedModel,
    load_run_model,
    load_serving_model,
)
from recommendations.models import Event, ExperimentVariant, RecommendationSet, StoredList, TrainingRun
from recommendations.training.artefacts import ArtefactError
from recommendations.training.loading import readable

logger = logging.getLogger(__name__)

# The newest events say most; older history is already in the precomputed list's neighbours.
MAX_HISTORY_EVENTS = 500


def _newest_training_event(types: list[str]) -> datetime | None:
    """Decay is measured from the newest event in the data, as in the batch engine (rows it cannot read left out,
    as there: one far-future row stored before ingest was bounded would otherwise stop every refresh)."""
    return (
        readable(Event.objects.filter(event_type__in=types))
        .exclude(product_id="")
        .order_by("-occurred_at")
        .values_list("occurred_at", flat=True)
        .first()
    )


def shopper_weights(shopper: str) -> tuple[dict[str, float], set[str]]:
    """The shopper's damped weight per product, and the products they bought."""
    weights = {k: float(v) for k, v in rec_settings.EVENT_WEIGHTS.items()}
    types = loaded_event_types(weights)
    rows = list(
        readable(Event.objects.filter(shopper=shopper, event_type__in=types))
        .exclude(product_id="")
        .order_by("-occurred_at")
        .values_list("product_id", "event_type", "occurred_at")[:MAX_HISTORY_EVENTS]
    )
    newest = _newest_training_event(types)
    half_life = float(rec_settings.RECENCY_HALF_LIFE_DAYS)
    summed: dict[str, float] = defaultdict(float)
    bought: set[str] = set()
    for product_id, event_type, occurred_at in rows:
        if event_type == "purchase":
            bought.add(product_id)
        weight = weights.get(event_type, 0.0)
        if weight <= 0:
            continue
        age_days = max((newest - occurred_at).total_seconds(), 0.0) / 86_400 if newest else 0.0
        summed[product_id] += weight * 0.5 ** (age_days / half_life)
    damped = {pid: max(math.log1p(w), MIN_CELL_WEIGHT) for pid, w in summed.items()}
    return damped, bought


def score_shopper(weights: dict[str, float], bought: set[str], neighbours: dict[str, list[list]], n: int) -> list[list]:
    """Top `n` [product_id, score, "because:<anchor>"] from the anchors' neighbour lists."""
    scores: dict[str, float] = defaultdict(float)
    best: dict[str, tuple[float, str]] = {}
    for anchor, weight in weights.items():
        for product_id, similarity, *_ in neighbours.get(anchor, []):
            if product_id in bought:
                continue
            contribution = weight * float(similarity)
            scores[product_id] += contribution
            current = best.get(product_id)
            # Same tie-break as the batch engine: the biggest contribution, then the smallest anchor id.
            if current is None or contribution > current[0] or (contribution == current[0] and anchor < current[1]):
                best[product_id] = (contribution, anchor)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [[pid, round(score, 6), f"{reasons.BECAUSE_}{best[pid][1]}"] for pid, score in ranked if score > 0]


def model_items(served: ServedModel, shopper: str, n: int) -> list[list]:
    """Top `n` [product_id, score, reason] for one shopper from the serving model, as the precompute makes them."""
    weights = {k: float(v) for k, v in rec_settings.EVENT_WEIGHTS.items()}
    types = loaded_event_types(weights)
    rows = list(
        readable(Event.objects.filter(shopper=shopper, event_type__in=types))
        .exclude(product_id="")
        .order_by("-occurred_at")
        .values_list("shopper", "product_id", "event_type", "occurred_at")[:MAX_HISTORY_EVENTS]
    )
    newest = _newest_training_event(types)
    log = event_log_from_rows(reversed(rows), served.item_ids, weights)
    log, _ = clean_log(log, float(rec_settings.BURST_SECONDS), int(rec_settings.BOT_MAX_EVENTS_PER_MINUTE))
    reference = micros(newest) if newest is not None else None
    interactions, shoppers = to_interactions(log, reference_us=reference)
    if not shoppers:
        return []
    bought_items = np.unique(log.item_idx[log.is_purchase])
    bought = sp.csr_matrix(
        (np.ones(bought_items.size, dtype=np.int8), (np.zeros(bought_items.size, dtype=np.int64), bought_items)),
        shape=(1, len(served.item_ids)),
    )
    ids = served.item_ids
    for chunk in recommend_chunks(served.model, interactions, bought, served.active, n, served.category_of_item):
        for _, items in chunk:
            return [
                [ids[i], round(s, 6), f"{reasons.BECAUSE_}{ids[a]}" if a >= 0 else reasons.FOR_YOU] for i, s, a in items
            ]
    return []


def refresh_shopper(shopper: str) -> int | None:
    """Rewrite `shopper`'s for_you list in the active set; returns its length, or None with no active set.

    With a trained model serving, the list comes from that model (numpy scoring, no TensorFlow); otherwise from
    the active set's co-occurrence lists. A model whose artefact fails its check refreshes nothing: the
    shopper keeps the list the last good precompute wrote. Their experiment arm's list, if any, follows.
    """
    set_id = (
        RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE)
        .order_by("-activated_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if set_id is None or not shopper:
        return None
    try:
        # Remembered: a broken artefact is tried again when its files change (or after a while), not on every event.
        served = load_serving_model(remember_refusal=True)
    except RefusedArtefact as exc:
        logger.debug("serving model still refused; %s keeps the precomputed list: %s", shopper, exc)
        return None
    except ArtefactError:
        logger.exception(
            "serving model refused; shoppers keep their precomputed lists until its artefact changes (or for %ds)",
            int(serving_model.REFUSAL_SECONDS),
        )
        return None
    if served is not None:
        items = model_items(served, shopper, rec_settings.TOP_N)
    else:
        weights, bought = shopper_weights(shopper)
        neighbours = dict(
            StoredList.objects.filter(recommendation_set_id=set_id, placement="similar", subject__in=list(weights))
            .values_list("subject", "items")
            .iterator()
        )
        items = score_shopper(weights, bought, neighbours, rec_settings.TOP_N)
    _replace_list(set_id, "for_you", shopper, items)
    _refresh_arm_list(set_id, shopper, served)
    return len(items)


def _refresh_arm_list(set_id: int, shopper: str, served: ServedModel | None) -> None:
    """Rescore the shopper's "for_you@run<id>" list when their for_you arm serves a model version other than the
    serving one; a version whose model is refused is left alone (serving falls back to the serving model's list).

    The refusal is remembered per run (see `load_run_model`): a busy shop's events do not each re-hash the broken
    artefact, and the warning comes once per breakage, not once per event; a repaired artefact is picked up again."""
    arm = assignment.assign("for_you", shopper)
    if arm is None or arm.strategy != ExperimentVariant.Strategy.MODEL_VERSION or arm.training_run_id is None:
        return
    if served is not None and arm.training_run_id == served.run_id:
        return
    run = TrainingRun.objects.filter(pk=arm.training_run_id).first()
    if run is None:
        return
    try:
        model = load_run_model(run, remember_refusal=True)
    except RefusedArtefact as exc:
        logger.debug("model of training run #%s still refused; %s keeps its arm's list: %s", run.pk, shopper, exc)
        return
    except ArtefactError as exc:
        logger.warning(
            "model of training run #%s refused; its arm's shoppers keep their lists until its artefact changes "
            "(or for %ds): %s",
            run.pk,
            int(serving_model.REFUSAL_SECONDS),
            exc,
        )
        return
    _replace_list(set_id, keys.arm_list("for_you", run.pk), shopper, model_items(model, shopper, rec_settings.TOP_N))


def _replace_list(set_id: int, placement: str, shopper: str, items: list[list]) -> None:
    with transaction.atomic():
        if items:
            StoredList.objects.update_or_create(
                recommendation_set_id=set_id, placement=placement, subject=shopper, defaults={"items": items}
            )
        else:
            StoredList.objects.filter(recommendation_set_id=set_id, placement=placement, subject=shopper).delete()
