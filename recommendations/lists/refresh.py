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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import connection, transaction
from django.db.models import F, Window
from django.db.models.functions import RowNumber

from recommendations import keys
from recommendations.conf import event_weights, rec_settings
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


def _event_types() -> list[str]:
    return loaded_event_types(event_weights())


_UNSET: Any = object()


def shopper_weights(shopper: str, newest: datetime | None = _UNSET) -> tuple[dict[str, float], set[str]]:
    """The shopper's damped weight per product, and the products they bought (`newest`: the decay's reference, the
    newest event in the data, read when not given)."""
    weights = event_weights()
    types = loaded_event_types(weights)
    rows = list(
        readable(Event.objects.filter(shopper=shopper, event_type__in=types))
        .exclude(product_id="")
        .order_by("-occurred_at")
        .values_list("product_id", "event_type", "occurred_at")[:MAX_HISTORY_EVENTS]
    )
    if newest is _UNSET:
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


# Shoppers per statement when their newest events are read as one UNION ALL of per-shopper LIMIT queries.
UNION_SHOPPERS = 100


def _newest_events(shoppers: list[str], types: list[str]) -> list[tuple[str, str, str, datetime]]:
    """(shopper, product_id, event_type, occurred_at) of each shopper's newest MAX_HISTORY_EVENTS events, each
    shopper's oldest first.

    Where the database allows a LIMIT inside a UNION (PostgreSQL), one statement per UNION_SHOPPERS shoppers of
    per-shopper queries, each of which walks the (shopper, time) index and stops at the limit, however many events a
    shopper has; elsewhere (SQLite, the demo) one window query, which reads all of their events first.
    """
    events = readable(Event.objects.filter(event_type__in=types)).exclude(product_id="")
    columns = ("shopper", "product_id", "event_type", "occurred_at")
    rows: list[tuple[str, str, str, datetime]] = []
    if connection.features.supports_slicing_ordering_in_compound:
        for start in range(0, len(shoppers), UNION_SHOPPERS):
            parts = [
                events.filter(shopper=shopper)
                .order_by("-occurred_at", "-pk")
                .values_list(*columns)[:MAX_HISTORY_EVENTS]
                for shopper in shoppers[start : start + UNION_SHOPPERS]
            ]
            rows.extend(parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0])
    else:
        newest_first = Window(
            RowNumber(), partition_by=[F("shopper")], order_by=[F("occurred_at").desc(), F("pk").desc()]
        )
        rows.extend(
            events.filter(shopper__in=shoppers)
            .annotate(recent=newest_first)
            .filter(recent__lte=MAX_HISTORY_EVENTS)
            .order_by("shopper", "-occurred_at", "-pk")
            .values_list(*columns)
        )
    # The engine's cleaning sorts by shopper and time; equal times keep this order (the newest-first one, reversed).
    rows.reverse()
    return rows


def model_items(served: ServedModel, shopper: str, n: int, newest: datetime | None = _UNSET) -> list[list]:
    """Top `n` [product_id, score, reason] for one shopper from the serving model, as the precompute makes them
    (`newest` as in `shopper_weights`)."""
    return model_items_many(served, [shopper], n, newest).get(shopper, [])


def model_items_many(
    served: ServedModel, shoppers: list[str], n: int, newest: datetime | None = _UNSET
) -> dict[str, list[list]]:
    """`model_items` for several shoppers: one query for their newest events and one scoring of them all, as a
    precompute chunk is scored (a shopper with no event the model can read gets no entry)."""
    weights = event_weights()
    types = loaded_event_types(weights)
    rows = _newest_events(shoppers, types)
    if newest is _UNSET:
        newest = _newest_training_event(types)
    log = event_log_from_rows(rows, served.item_ids, weights)
    log, _ = clean_log(log, float(rec_settings.BURST_SECONDS), int(rec_settings.BOT_MAX_EVENTS_PER_MINUTE))
    reference = micros(newest) if newest is not None else None
    interactions, keys_of_rows = to_interactions(log, reference_us=reference)
    if not keys_of_rows:
        return {}
    row_of_key = {key: row for row, key in enumerate(keys_of_rows)}
    row_of_log_shopper = np.array([row_of_key.get(key, -1) for key in log.shoppers], dtype=np.int64)
    buyer = row_of_log_shopper[log.shopper_idx[log.is_purchase]]
    bought_items = log.item_idx[log.is_purchase]
    known = buyer >= 0
    bought = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.int8), (buyer[known], bought_items[known])),
        shape=(len(keys_of_rows), len(served.item_ids)),
    )
    ids = served.item_ids
    lists: dict[str, list[list]] = {}
    for chunk in recommend_chunks(served.model, interactions, bought, served.active, n, served.category_of_item):
        for row, items in chunk:
            lists[keys_of_rows[int(row)]] = [
                [ids[i], round(s, 6), f"{reasons.BECAUSE_}{ids[a]}" if a >= 0 else reasons.FOR_YOU] for i, s, a in items
            ]
    return lists


@dataclass(frozen=True)
class _Target:
    """What every refresh of one task writes into and scores with, read once per task: the active set, the serving
    model (None: the co-occurrence lists) and the decay's reference (the newest event in the data)."""

    set_id: int
    served: ServedModel | None
    newest: datetime | None


def _target() -> _Target | None:
    """None when there is nothing to refresh into (no active set) or the serving model is refused."""
    set_id = (
        RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE)
        .order_by("-activated_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if set_id is None:
        return None
    try:
        # Remembered: a broken artefact is tried again when its files change (or after a while), not on every event.
        served = load_serving_model(remember_refusal=True)
    except RefusedArtefact as exc:
        logger.debug("serving model still refused; shoppers keep their precomputed lists: %s", exc)
        return None
    except ArtefactError:
        logger.exception(
            "serving model refused; shoppers keep their precomputed lists until its artefact changes (or for %ds)",
            int(serving_model.REFUSAL_SECONDS),
        )
        return None
    return _Target(set_id, served, _newest_training_event(_event_types()))


def refresh_shopper(shopper: str) -> int | None:
    """Rewrite `shopper`'s for_you list in the active set; returns its length, or None with no active set.

    With a trained model serving, the list comes from that model (numpy scoring, no TensorFlow); otherwise from
    the active set's co-occurrence lists. A model whose artefact fails its check refreshes nothing: the
    shopper keeps the list the last good precompute wrote. Their experiment arm's list, if any, follows.
    """
    if not shopper:
        return None
    target = _target()
    return None if target is None else _refresh(target, [shopper])[shopper]


def refresh_shoppers(shoppers: Iterable[str]) -> int:
    """`refresh_shopper` for each of `shoppers`; returns how many were refreshed.

    Done together: the active set, the serving model and the newest event are read once, the model scores every
    shopper in one batch from one query for their events, and the lists are written in one upsert (a shopper
    alone took eleven queries, ~20 ms; docs/benchmarks.md, "Load and faults").
    """
    wanted = [s for s in dict.fromkeys(shoppers) if s]
    target = _target() if wanted else None
    return 0 if target is None else len(_refresh(target, wanted))


def _refresh(target: _Target, shoppers: list[str]) -> dict[str, int]:
    """Each shopper's new for_you list written (and their experiment arm's); returns their lengths."""
    if target.served is not None:
        scored = model_items_many(target.served, shoppers, rec_settings.TOP_N, target.newest)
        lists = {shopper: scored.get(shopper, []) for shopper in shoppers}
    else:
        lists = {shopper: _cooccurrence_items(target, shopper) for shopper in shoppers}
    _replace_lists(target.set_id, "for_you", lists)
    for shopper in shoppers:
        _refresh_arm_list(target, shopper)
    return {shopper: len(items) for shopper, items in lists.items()}


def _cooccurrence_items(target: _Target, shopper: str) -> list[list]:
    weights, bought = shopper_weights(shopper, target.newest)
    neighbours = dict(
        StoredList.objects.filter(recommendation_set_id=target.set_id, placement="similar", subject__in=list(weights))
        .values_list("subject", "items")
        .iterator()
    )
    return score_shopper(weights, bought, neighbours, rec_settings.TOP_N)


def _refresh_arm_list(target: _Target, shopper: str) -> None:
    """Rescore the shopper's "for_you@run<id>" list when their for_you arm serves a model version other than the
    serving one; a version whose model is refused is left alone (serving falls back to the serving model's list).

    The refusal is remembered per run (see `load_run_model`): a busy shop's events do not each re-hash the broken
    artefact, and the warning comes once per breakage, not once per event; a repaired artefact is picked up again."""
    arm = assignment.assign("for_you", shopper)
    if arm is None or arm.strategy != ExperimentVariant.Strategy.MODEL_VERSION or arm.training_run_id is None:
        return
    if target.served is not None and arm.training_run_id == target.served.run_id:
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
    items = model_items(model, shopper, rec_settings.TOP_N, target.newest)
    _replace_lists(target.set_id, keys.arm_list("for_you", run.pk), {shopper: items})


def _replace_lists(set_id: int, placement: str, lists: dict[str, list[list]]) -> None:
    """Upsert each subject's list on the (set, placement, subject) key and delete the empty ones, in one transaction
    of two statements at most. Subjects go in sorted order, so two tasks writing the same shoppers lock their rows
    in one order and cannot deadlock."""
    full = [
        StoredList(recommendation_set_id=set_id, placement=placement, subject=subject, items=items)
        for subject, items in sorted(lists.items())
        if items
    ]
    empty = sorted(subject for subject, items in lists.items() if not items)
    with transaction.atomic():
        if full:
            StoredList.objects.bulk_create(
                full,
                update_conflicts=True,
                unique_fields=["recommendation_set", "placement", "subject"],
                update_fields=["items"],
            )
        if empty:
            StoredList.objects.filter(recommendation_set_id=set_id, placement=placement, subject__in=empty).delete()
