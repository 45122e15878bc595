"""One retrain: events → clean training data → temporal split → candidates side by side → pick → gate → register.

The split is the SPLIT setting's, "auto" deciding from the data (engine.split.decide_split). Every configured
candidate fits on the same split and is measured on the same validation shoppers; `choose` compares them shopper by
shopper and prefers the simpler recipe unless the richer one leads by more than noise. The test split is
scored only once the choice is made, for the report. The chosen recipe is then refit on every event (so the
serving model knows the newest products and shoppers), written as a hash-checked artefact, and it serves only
if it beats the serving model on this run's validation set by GATE_MARGIN; otherwise the old model stays and
the run says why. The whole run holds a single-flight lock: a second retrain exits at once as "skipped".
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from recommendations import signals
from recommendations.conf import event_weights, rec_settings
from recommendations.engine import dataset, metrics
from recommendations.engine.base import Interactions, ItemFeatures, Recommender
from recommendations.engine.candidates import CANDIDATE_SPECS, build_candidate, recommender_class
from recommendations.engine.coldslot import TOLERANCE as COLD_SLOT_TOLERANCE
from recommendations.engine.split import MIN_EVAL_SHOPPERS, Split, decide_split
from recommendations.models import TrainingRun
from recommendations.training import artefacts, liveness, loading
from recommendations.training.progress import ProgressCallback, RunProgress

logger = logging.getLogger(__name__)

# Share of the progress bar per stage; "fit" stages are named "fit <candidate>" and share FIT_SHARE.
FIXED_STAGES: dict[str, float] = {
    "load events": 0.10,
    "clean": 0.02,
    "features": 0.02,
    "split": 0.02,
    "blend": 0.04,
    "test": 0.05,
    "refit": 0.15,
    "save": 0.03,
    "gate": 0.02,
}
FIT_SHARE = 0.55
LOCK_KEY = 0x7265636F  # "reco": the advisory lock id every retrain takes
BLEND_MAX_COMPONENTS = 3
# Searches that score many variants (blend weights) use this many validation shoppers; the result is then scored on
# the whole validation set like every candidate.
SEARCH_SHOPPERS = 1000
# The noise rule: a richer recipe (a costlier class, a blend) serves over a simpler one only when its validation lead
# is more than this many paired standard errors. One: on MovieLens a two-error rule would have swapped blends that
# held on test (+0.031 per shopper) for single models; docs/benchmarks.md has the measurements.
NOISE_SE = 1.0
# Cost of a recommender class (to fit, store and score), for the noise rule: among candidates within noise of the
# best, the cheapest serves. Classes not listed (the neural models) cost UNLISTED_COST.
CLASS_COST = {"popularity": 0, "content": 1, "item_knn": 1, "ease": 2, "ease_lowrank": 2}
# The Keras candidates: trained under a time budget (`max_seconds`), never refitted (see refit).
DEEP_CLASSES = ("neural", "sequence")
# However late a retrain is, a deep candidate trains at least this long: less gives no useful epoch.
MIN_DEEP_SECONDS = 15.0
# After the fits, the blend search and the test stage score the candidates again: 3 to 3.5 times their validation
# scoring on the 1M-event bench on a slower machine (docs/benchmarks.md, "Retrain"; 2.5 let it end 10 s past
# RETRAIN_SECONDS there); this multiple of it is kept back for them. A slot search for new products (only for
# recipes without a feature-reading model: cheap ones) may add one more scoring.
FINISH_SCORING_FACTOR = 3.5
UNLISTED_COST = 3


class TrainingError(Exception):
    """A retrain that cannot go on; the message is the one line staff see."""


@dataclass
class TrainingData:
    interactions: Interactions
    shoppers: list[str]
    features: ItemFeatures
    cleaning: dict[str, int]
    data_until: datetime | None


@dataclass
class CandidateResult:
    name: str
    recommender: Recommender
    validation: dict[str, float]
    fit: dict[str, Any]
    seconds: float
    test: dict[str, float] = field(default_factory=dict)
    per_shopper: np.ndarray | None = None  # validation NDCG@10 of each validation shopper, for paired comparisons


@dataclass
class Choice:
    name: str  # a candidate name, or "blend(a+b)"
    recommender: Recommender
    validation: dict[str, float]
    components: list[str]
    weights: list[float]
    # How the choice was made, as codes and numbers (`choice_lines` words them): each rule that decided something.
    notes: list[dict[str, Any]] = field(default_factory=list)
    # {"scout": candidate, "position": p}: each list's slot p goes to the new product the scout ranks highest.
    cold_slot: dict[str, Any] | None = None


# ---- data -----------------------------------------------------------------------------------------------------------


def build_training_data(progress: RunProgress | None = None) -> TrainingData:
    """Read events and profiles from the database into cleaned Interactions and ItemFeatures.

    Rows whose time cannot be read (see loading.READABLE_FROM) are left out and counted in the cleaning stats
    (`unreadable_time_skipped`) and the log, so one bad row costs itself, not the run.
    """
    weights = event_weights()
    unreadable = loading.count_unreadable_events(weights)
    if unreadable:
        logger.warning(
            "training leaves out %d events whose time cannot be read (outside the years 1 to 9999 in UTC); "
            "docs/operations.md says how to find and delete them",
            unreadable,
        )
    rows = loading.load_profile_rows()
    item_ids = [r[0] for r in rows]
    if progress:
        progress.start("load events", loading.count_training_events(weights))
    log = loading.load_event_log(
        item_ids, weights, on_row_chunk=progress.advance if progress else None, pseudonymise=True
    )
    if progress:
        progress.start("clean")
    log, cleaning = dataset.clean_log(
        log, float(rec_settings.BURST_SECONDS), int(rec_settings.BOT_MAX_EVENTS_PER_MINUTE)
    )
    interactions, shoppers = dataset.to_interactions(log)
    cleaning_stats = {"unreadable_time_skipped": unreadable, **cleaning.as_dict()}
    newest = log.newest_us
    data_until = None if newest is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=newest)
    if progress:
        progress.start("features")
    features = dataset.item_features(rows, interactions, reference=data_until)
    return TrainingData(interactions, shoppers, features, cleaning_stats, data_until)


# ---- candidates, choice ---------------------------------------------------------------------------------------------


def deep_budget(left: float, reserve: float, deep_left: int, own_max: float) -> float:
    """Seconds a deep candidate may train: its share of what the retrain has left after `reserve`, at most its own
    `max_seconds` and at least MIN_DEEP_SECONDS (or its own, if smaller): a late retrain overruns a little rather than
    serve a model that never finished an epoch."""
    share = (left - reserve) / max(deep_left, 1)
    return round(max(min(own_max, share), min(own_max, MIN_DEEP_SECONDS)), 1)


def fit_candidates(
    split: Split,
    features: ItemFeatures,
    names: list[str],
    allowed: np.ndarray | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_progress: ProgressCallback | None = None,
    deadline: float | None = None,
) -> dict[str, CandidateResult]:
    """Fit every named candidate on split.train and score it on split.validation; failures are recorded, not fatal.

    EASE above EASE_MAX_ITEMS refuses to fit (ValueError) and is left out with its reason. With a `deadline`
    (time.monotonic()), the deep candidates fit last and share what is left of it (`deep_budget`), keeping back
    FINISH_SCORING_FACTOR times the validation scoring so far for the blend search and the test stage.
    """
    results: dict[str, CandidateResult] = {}
    deep = [n for n in names if CANDIDATE_SPECS[n][0] in DEEP_CLASSES]
    scoring: list[float] = []  # seconds each fitted candidate took to score the validation shoppers
    for name in [n for n in names if n not in deep] + deep:
        if on_stage:
            on_stage(f"fit {name}")
        started = time.monotonic()
        params = class_params()
        own_max: float | None = None  # set when the retrain's deadline sets this candidate's budget
        if deadline is not None and name in deep:
            class_name = CANDIDATE_SPECS[name][0]
            own_max = float({**recommender_class(class_name).defaults, **params.get(class_name, {})}["max_seconds"])
            deep_left = len(deep) - deep.index(name)
            guess = float(np.mean(scoring)) if scoring else 0.0
            reserve = FINISH_SCORING_FACTOR * (sum(scoring) + deep_left * guess)
            budget = deep_budget(deadline - started, reserve, deep_left, own_max)
            params[class_name] = {**params.get(class_name, {}), "max_seconds": budget}
        recommender = build_candidate(name, float(rec_settings.RECENCY_HALF_LIFE_DAYS), params)
        stage = f"fit {name}"

        def report(_inner: str, done: int, total: int, stage: str = stage) -> None:
            # Models name their own steps; the run shows them all under this candidate's stage.
            if on_progress is not None:
                on_progress(stage, done, total)

        try:
            fit_stats = recommender.fit(split.train, features, split.validation, report) or {}
            if own_max is not None:  # beside the "max_seconds" the model records: what it would have had
                fit_stats["own_max_seconds"] = own_max
        except ValueError as exc:
            logger.info("candidate %s left out: %s", name, exc)
            results[name] = CandidateResult(name, recommender, {}, {"skipped": str(exc)}, time.monotonic() - started)
            continue
        scoring_started = time.monotonic()
        validation, per_shopper = metrics.evaluate_paired(recommender, split.validation, allowed=allowed)
        scoring.append(time.monotonic() - scoring_started)
        seconds = round(time.monotonic() - started, 3)
        results[name] = CandidateResult(name, recommender, validation, fit_stats, seconds, per_shopper=per_shopper)
    return {name: results[name] for name in names if name in results}


def class_params(neural_extra: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per-class parameters from settings: the NEURAL dict, and EASE's size limit (where the low-rank EASE starts)."""
    return {
        "neural": {**dict(rec_settings.NEURAL or {}), **(neural_extra or {})},
        "ease": {"max_items": int(rec_settings.EASE_MAX_ITEMS)},
        # The low-rank EASE stands in only where exact EASE is refused (a 200k-product shop).
        "ease_lowrank": {"min_items": int(rec_settings.EASE_MAX_ITEMS)},
    }


def choose(
    results: dict[str, CandidateResult],
    split: Split,
    blend: bool,
    allowed: np.ndarray | None = None,
    features: ItemFeatures | None = None,
) -> Choice:
    """The recipe to serve (`choose_recipe`); given the catalog's `features`, with a slot for new products when
    validation shows one is cheap (`with_cold_slot`)."""
    choice = choose_recipe(results, split, blend, allowed)
    if features is None or not rec_settings.COLD_SLOT:
        return choice
    return with_cold_slot(choice, results, split, features, allowed)


def with_cold_slot(
    choice: Choice,
    results: dict[str, CandidateResult],
    split: Split,
    features: ItemFeatures,
    allowed: np.ndarray | None = None,
) -> Choice:
    """`choice` with each list's slot for the best new product of a scout (engine.coldslot), when validation shows
    a slot costs at most its tolerance; else `choice` itself. Either way a note records every try and the outcome.
    A recipe with a feature-reading component (content, neural, sequence) gets none: it ranks new products itself.
    """
    from recommendations.engine.coldslot import SCOUT_CLASSES, ColdSlot, choose_cold_slot, cold_mask

    own = [name for name in choice.components if results[name].recommender.name in SCOUT_CLASSES]
    if own:
        # The recipe ranks new products by their features itself: a slot would repeat it, at the cost of scoring
        # validation again (a minute and more at 200,000 products).
        choice.notes.append({"rule": "cold_slot", "reason": "recipe_ranks_new_products", "by": own[0], "tried": []})
        return choice
    able = [r for r in results.values() if r.validation and r.recommender.name in SCOUT_CLASSES]
    # The cheaper scout first: among equal slots, the first one listed serves.
    scouts = {r.name: r.recommender for r in sorted(able, key=lambda r: SCOUT_CLASSES.index(r.recommender.name))}
    is_cold = cold_mask(split.train)
    # On the whole validation set: the search scores it once, and the chosen slot's metrics are then its own.
    found = choose_cold_slot(choice.recommender, scouts, split.validation, is_cold)
    note: dict[str, Any] = {"rule": "cold_slot", "reason": found.reason, "tried": found.tried}
    if found.scout is None or found.position is None or found.validation is None:
        choice.notes.append(note)
        return choice
    slot = ColdSlot(choice.recommender, scouts[found.scout], found.position, scout_name=found.scout)
    slot.fit(split.train, features)
    validation = found.validation
    if allowed is not None:  # the search ranks the whole catalog
        validation = metrics.evaluate(slot, split.validation, allowed=allowed)
    note.update(scout=found.scout, position=found.position, cold_recall=validation["cold_recall"])
    note["cost"] = float(choice.validation["ndcg"]) - float(validation["ndcg"])
    return Choice(
        f"{choice.name}+new({found.scout})",
        slot,
        validation,
        choice.components,
        choice.weights,
        [*choice.notes, note],
        {"scout": found.scout, "position": found.position},
    )


def choose_recipe(
    results: dict[str, CandidateResult], split: Split, blend: bool, allowed: np.ndarray | None = None
) -> Choice:
    """The candidate to serve, from validation NDCG@10 compared shopper by shopper.

    The best candidate serves unless a cheaper one (CLASS_COST) is within NOISE_SE paired standard errors of it; a
    blend of the best few serves only when it leads that choice and the best single candidate by more than NOISE_SE
    paired standard errors, and never on fewer than MIN_EVAL_SHOPPERS validation shoppers, where its weight search
    fits noise. Paired: the same shoppers score both, so shopper-to-shopper spread does not hide a real lead.
    """
    fitted = [r for r in results.values() if r.validation]
    if not fitted:
        raise TrainingError(
            "no candidate could be fitted: " + "; ".join(f"{r.name}: {r.fit}" for r in results.values())
        )
    for result in fitted:
        if result.per_shopper is None:
            result.per_shopper = metrics.evaluate_paired(result.recommender, split.validation, allowed=allowed)[1]
    ranked = sorted(fitted, key=lambda r: (-r.validation["ndcg"], r.name))
    best = ranked[0]
    picked, notes = simplest_within_noise(ranked)
    choice = Choice(picked.name, picked.recommender, picked.validation, [picked.name], [1.0], notes)
    if not blend or len(ranked) < 2:
        return choice
    shoppers = split.validation.n_shoppers
    if shoppers < MIN_EVAL_SHOPPERS:
        choice.notes.append({"rule": "no_blend_small_sample", "shoppers": shoppers, "min_shoppers": MIN_EVAL_SHOPPERS})
        return choice
    from recommendations.engine.blend import Blend, fit_blend_weights

    components = _blend_components(ranked)
    # A 0.1 grid for two components (11 weightings), 0.2 for three (21): finer steps cost time and only fit noise.
    step = 0.1 if len(components) == 2 else 0.2
    weights, _searched = fit_blend_weights(
        [c.recommender for c in components], split.validation.sample(SEARCH_SHOPPERS), grid=step
    )
    weights = [float(w) for w in weights]
    kept = [(c, w) for c, w in zip(components, weights, strict=True) if w > 0]
    if len(kept) < 2:
        return choice
    blended = Blend([c.recommender for c, _w in kept], [w for _c, w in kept])
    validation, per_shopper = metrics.evaluate_paired(blended, split.validation, allowed=allowed)
    names = [c.name for c, _w in kept]
    name = f"blend({'+'.join(names)})"
    verdict = blend_verdict(name, per_shopper, [picked] if picked is best else [picked, best])
    if verdict["rule"] != "blend_leads":
        choice.notes.append(verdict)
        return choice
    return Choice(name, blended, validation, names, [w for _c, w in kept], [*notes, verdict])


def blend_verdict(name: str, per_shopper: np.ndarray, rivals: list[CandidateResult]) -> dict[str, Any]:
    """Does blend `name` (its validation NDCG per shopper) lead every rival by more than NOISE_SE paired standard
    errors? The note names the rival it failed to lead ("blend_within_noise"), else its lead over the first one."""
    for rival in rivals:
        lead, se = metrics.paired_difference(per_shopper, rival.per_shopper)
        if lead <= 0 or lead <= NOISE_SE * se:
            return {"rule": "blend_within_noise", "blend": name, "over": rival.name, "lead": lead, "se": se}
    lead, se = metrics.paired_difference(per_shopper, rivals[0].per_shopper)
    return {"rule": "blend_leads", "blend": name, "over": rivals[0].name, "lead": lead, "se": se}


def _evaluation_warnings(split: Split, results: dict[str, CandidateResult]) -> list[dict[str, Any]]:
    """Warnings, as codes and numbers: a validation set too small to rank the candidates; a deep candidate that the
    retrain's budget (RETRAIN_SECONDS) gave less time than its own max_seconds."""
    warnings: list[dict[str, Any]] = [
        {"code": "short_budget", "candidate": r.name, "seconds": r.fit["max_seconds"], "own": r.fit["own_max_seconds"]}
        for r in results.values()
        if "own_max_seconds" in r.fit and r.fit["max_seconds"] < r.fit["own_max_seconds"]
    ]
    shoppers = split.validation.n_shoppers
    if shoppers >= MIN_EVAL_SHOPPERS:
        return warnings
    warning: dict[str, Any] = {"code": "small_sample", "shoppers": shoppers, "min_shoppers": MIN_EVAL_SHOPPERS}
    ranked = sorted((r for r in results.values() if r.validation), key=lambda r: (-r.validation["ndcg"], r.name))
    if len(ranked) >= 2 and ranked[0].per_shopper is not None and ranked[1].per_shopper is not None:
        lead, se = metrics.paired_difference(ranked[0].per_shopper, ranked[1].per_shopper)
        warning.update(first=ranked[0].name, second=ranked[1].name, lead=lead, se=se)
    return [warning, *warnings]


def split_line(stats: dict[str, Any]) -> str:
    """The split a run used and why, in one sentence for staff (the command's "split:" line, the admin page)."""
    split = stats.get("split") or {}
    if "skipped" in split:
        return _("no validation set (%(why)s)") % {"why": split["skipped"]}
    decision = split.get("decision") or {}
    mode = {"global": _("global cut"), "per_shopper": _("per shopper")}.get(split.get("mode"), split.get("mode", "-"))
    sizes = _("%(validation)s validation and %(test)s test shoppers") % {
        "validation": split.get("validation_shoppers", 0),
        "test": split.get("test_shoppers", 0),
    }
    reason = decision.get("reason")
    numbers = {"spanning": decision.get("spanning_shoppers"), "min": decision.get("min_shoppers")}
    if reason == "enough_span":
        why = _("auto: %(spanning)s shoppers span the global cut, at least %(min)s") % numbers
    elif reason == "few_span":
        why = _("auto: only %(spanning)s shoppers span the global cut, fewer than %(min)s") % numbers
    elif reason == "no_global_cut":
        why = _("auto: the events span too little time for a global cut")
    else:
        why = _("set in SPLIT")
    return f"{mode} ({why}); {sizes}"


def warning_lines(stats: dict[str, Any]) -> list[str]:
    """The run's evaluation warnings in words (the command's "warning:" lines, the admin page)."""
    lines = []
    for warning in stats.get("warnings") or []:
        if warning.get("code") == "short_budget":
            lines.append(
                _(
                    "%(candidate)s trained for %(seconds)s s of its %(own)s s: the other candidates used most of the "
                    "retrain's budget (RETRAIN_SECONDS). Raise it, or leave slow candidates out, for a better model."
                )
                % {"candidate": warning["candidate"], "seconds": warning["seconds"], "own": warning["own"]}
            )
        if warning.get("code") != "small_sample":
            continue
        line = _(
            "only %(shoppers)s validation shoppers (fewer than %(min)s): too few to rank the candidates; no blend "
            "was chosen on them."
        ) % {"shoppers": warning["shoppers"], "min": warning["min_shoppers"]}
        if "lead" in warning:
            line += " " + _("%(first)s leads %(second)s by %(lead).4f ± %(se).4f NDCG@10 (paired standard error).") % {
                "first": warning["first"],
                "second": warning["second"],
                "lead": warning["lead"],
                "se": warning["se"],
            }
        lines.append(line)
    return lines


def choice_lines(stats: dict[str, Any]) -> list[str]:
    """Why the chosen recipe won over a richer one, in words (one line per rule that decided something)."""
    lines = []
    for note in stats.get("choice") or []:
        rule = note.get("rule")
        if rule == "simpler_within_noise":
            lines.append(
                _(
                    "%(best)s scored highest but leads by only %(lead).4f ± %(se).4f (within noise): the cheaper "
                    "model serves."
                )
                % note
            )
        elif rule == "blend_within_noise":
            lines.append(
                _("%(blend)s leads %(over)s by only %(lead).4f ± %(se).4f (within noise): the single model serves.")
                % note
            )
        elif rule == "blend_leads":
            lines.append(_("%(blend)s leads %(over)s by %(lead).4f ± %(se).4f: the blend serves.") % note)
        elif rule == "cold_slot" and note.get("scout"):
            lines.append(
                _(
                    "Slot %(position)s of each list goes to the new product %(scout)s ranks highest for the shopper: "
                    "it reached %(cold_recall).4f of validation's new products (recall@10) at a cost of %(cost).4f "
                    "NDCG@10."
                )
                % note
            )
        elif rule == "cold_slot" and note.get("reason") == "recipe_ranks_new_products":
            lines.append(
                _("No slot for new products: %(by)s, in the recipe, ranks them by their features itself.") % note
            )
        elif rule == "cold_slot" and note.get("reason") == "no_slot_within_tolerance":
            lines.append(
                _("No slot for new products: no candidate reached them at a cost within %(tolerance)s of NDCG@10.")
                % {"tolerance": f"{COLD_SLOT_TOLERANCE:.1%}"}
            )
    return lines


def _cost(result: CandidateResult) -> int:
    return CLASS_COST.get(result.recommender.name, UNLISTED_COST)


def simplest_within_noise(ranked: list[CandidateResult]) -> tuple[CandidateResult, list[dict[str, Any]]]:
    """The cheapest candidate whose validation NDCG@10 the best one does not beat by more than NOISE_SE paired
    standard errors (the best one itself when none is); among equally cheap ones, the higher scoring."""
    best = ranked[0]
    for result in sorted(ranked, key=lambda r: (_cost(r), -r.validation["ndcg"], r.name)):
        if result is best or _cost(result) >= _cost(best):
            break
        lead, se = metrics.paired_difference(best.per_shopper, result.per_shopper)
        if lead <= NOISE_SE * se:
            return result, [{"rule": "simpler_within_noise", "best": best.name, "lead": lead, "se": se}]
    return best, []


def _blend_components(ranked: list[CandidateResult]) -> list[CandidateResult]:
    """The best few, but never only look-alikes: the best of each recommender class goes first.

    Two EASE variants agree on almost everything; the neural model (sequence- and feature-aware, the only one that
    scores new products) brings what they miss, so it joins the blend even when it ranks lower on its own.
    """
    picked: list[CandidateResult] = []
    classes: set[str] = set()
    for result in ranked:
        kind = result.recommender.name
        if kind not in classes:
            picked.append(result)
            classes.add(kind)
    for result in ranked:
        if len(picked) >= BLEND_MAX_COMPONENTS:
            break
        if result not in picked:
            picked.append(result)
    return picked[:BLEND_MAX_COMPONENTS]


def recipe_over(
    choice: Choice, results: dict[str, CandidateResult], train: Interactions, features: ItemFeatures
) -> Recommender:
    """`choice`'s recipe (weights and slot as chosen) over the fitted candidates in `results`, which may be another
    split's: how the bench scores one mode's pick on the other mode's test set."""
    return _assemble(choice, lambda name: results[name].recommender, train, features)


def refit(
    choice: Choice, results: dict[str, CandidateResult], data: Interactions, features: ItemFeatures
) -> Recommender:
    """The chosen recipe fitted again on every event, with what validation taught it (see the neural exception)."""
    refitted: dict[str, Recommender] = {}

    def refit_one(name: str) -> Recommender:
        if name in refitted:
            return refitted[name]
        if results[name].recommender.name in DEEP_CLASSES:
            # Refitting the neural or sequence model would double a retrain's time; as fitted on the split it reads
            # every shopper's newest events when scoring and embeds products that arrived since from their features.
            refitted[name] = results[name].recommender
            return refitted[name]
        recommender = build_candidate(name, float(rec_settings.RECENCY_HALF_LIFE_DAYS), class_params())
        # Hyper-parameters a candidate chose on validation (content's weights) carry over to the refit.
        recommender.params.update(results[name].fit.get("chosen") or {})
        recommender.fit(data, features, None, None)
        refitted[name] = recommender
        return recommender

    return _assemble(choice, refit_one, data, features)


def _assemble(
    choice: Choice, fitted: Callable[[str], Recommender], data: Interactions, features: ItemFeatures
) -> Recommender:
    """`choice`'s recipe from `fitted(candidate name)`: one model, or the blend with its weights, and the new
    products' slot when one was chosen (new = no event in `data`)."""
    from recommendations.engine.blend import Blend

    parts = [fitted(name) for name in choice.components]
    model: Recommender = parts[0] if len(parts) == 1 else Blend(parts, list(choice.weights))
    if choice.cold_slot:
        from recommendations.engine.coldslot import ColdSlot

        scout = choice.cold_slot["scout"]
        model = ColdSlot(model, fitted(scout), int(choice.cold_slot["position"]), scout_name=scout)
        model.fit(data, features)
    return model


# ---- locking --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_flight() -> Iterator[bool]:
    """Yield True while holding the retrain lock, False when another retrain holds it (never waits).

    PostgreSQL: a session advisory lock, released by the server if the worker dies. Elsewhere: flock on a file
    in the model directory, released by the kernel if the process dies.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
            got = bool(cursor.fetchone()[0])
        try:
            yield got
        finally:
            if got:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        return
    root = artefacts.model_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".retrain.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- the run --------------------------------------------------------------------------------------------------------


def run_training(
    run_id: int | None = None,
    *,
    task_id: str = "",
    on_progress: ProgressCallback | None = None,
    candidates: list[str] | None = None,
) -> TrainingRun:
    """Retrain under the single-flight lock; returns the finished run (succeeded, kept_old, skipped or failed).

    Raises TrainingError / other exceptions after recording them on the run, so a command can exit non-zero.
    A finished run given again (a redelivered task) is returned untouched, and so is a run whose worker is alive
    (its heartbeat is fresh, or it holds the lock); a run whose worker was lost is taken over (training.liveness).
    """
    existing: TrainingRun | None = None
    if run_id is not None:
        existing = TrainingRun.objects.filter(pk=run_id).first()
        if existing is None:
            raise TrainingRun.DoesNotExist(f"training run #{run_id} does not exist")
        if existing.status not in (TrainingRun.Status.PENDING, TrainingRun.Status.RUNNING):
            return existing
        if existing.status == TrainingRun.Status.RUNNING and not liveness.is_lost(existing):
            logger.info("training run #%s is alive in %s; nothing to do", run_id, existing.worker or "another worker")
            return existing
    with single_flight() as got_lock:
        if not got_lock:
            if existing is not None and existing.status == TrainingRun.Status.RUNNING:
                # Its worker still holds the lock (alive, or its connection not closed yet): the beat's recover_runs
                # sends the run again while its heartbeat stays quiet.
                return existing
            busy = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).exclude(pk=run_id).first()
            message = f"another retrain (run #{busy.pk})" if busy else "another retrain"
            fields = {
                "status": TrainingRun.Status.SKIPPED,
                "finished_at": timezone.now(),
                "message": f"Skipped: {message} was running.",
                "task_id": task_id,
            }
            if run_id is None:
                return TrainingRun.objects.create(**fields)
            TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.PENDING).update(**fields)
            return TrainingRun.objects.get(pk=run_id)
        # Holding the lock, any other run still "running" without a heartbeat belongs to a worker that died.
        dead = [run.pk for run in liveness.lost_runs(TrainingRun) if run.pk != run_id]
        TrainingRun.objects.filter(pk__in=dead, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.FAILED,
            finished_at=timezone.now(),
            error="Interrupted: the worker stopped before the run finished.",
        )
        if run_id is None:
            claimed = liveness.start_new(TrainingRun, task_id)
        else:
            # Holding the lock proves a running run's worker gone, whatever its heartbeat says.
            claimed = liveness.claim(
                TrainingRun, run_id, task_id=task_id, force=True, reset={"message": "", "finished_at": None}
            )
        if claimed.attempt is None:
            if claimed.why == "exhausted":
                TrainingRun.objects.filter(pk=claimed.run.pk).update(
                    message="Failed: its worker was lost at every attempt; the serving model is unchanged."
                )
            return TrainingRun.objects.get(pk=claimed.run.pk)
        with liveness.Heartbeat(TrainingRun, claimed.run.pk, claimed.attempt):
            try:
                return _train(claimed.run, on_progress, candidates)
            except liveness.RunLost as exc:
                logger.warning("training run #%s: %s; this attempt stops", claimed.run.pk, exc)
                return TrainingRun.objects.get(pk=claimed.run.pk)


def _train(run: TrainingRun, on_progress: ProgressCallback | None, candidates: list[str] | None) -> TrainingRun:
    names = list(candidates or rec_settings.CANDIDATES)
    stages = dict(FIXED_STAGES)
    for name in names:
        stages[f"fit {name}"] = FIT_SHARE / len(names)
    # `run` is the claimed row: its attempt fences every progress write, the registration and the failure.
    progress = RunProgress(run, on_progress, stages, attempt=run.attempts)
    started = time.monotonic()
    try:
        _prune_artefacts()
        data = build_training_data(progress)
        if data.interactions.n_events == 0:
            raise TrainingError("there are no training events yet (views, carts, purchases)")
        progress.start("split")
        try:
            split, decision = decide_split(
                data.interactions,
                str(rec_settings.SPLIT),
                valid_fraction=float(rec_settings.VALIDATION_FRACTION),
                test_fraction=float(rec_settings.TEST_FRACTION),
                max_eval_shoppers=int(rec_settings.MAX_EVAL_SHOPPERS),
            )
            why_not = "" if split.validation.n_shoppers else NO_VALIDATION[split.mode]
        except ValueError as exc:
            why_not = str(exc)
        if why_not:
            return _train_unvalidated(run, data, names, progress, why_not)
        data_stats = {
            "events": data.interactions.n_events,
            "shoppers": data.interactions.n_shoppers,
            "products": data.features.n_items,
            "products_with_events": int(np.unique(data.interactions.item).size),
            "cleaning": data.cleaning,
            "split": {**split.stats(), "decision": decision.as_dict()},
            "data_until": data.data_until.isoformat() if data.data_until else None,
        }
        TrainingRun.objects.filter(pk=run.pk).update(data_stats=data_stats)

        budget = rec_settings.RETRAIN_SECONDS
        results = fit_candidates(
            split,
            data.features,
            names,
            on_stage=progress.start,
            on_progress=progress.update,
            deadline=None if budget is None else started + float(budget),
        )
        progress.start("blend")
        choice = choose(results, split, bool(rec_settings.BLEND), features=data.features)
        data_stats["choice"] = _jsonable(choice.notes)
        data_stats["warnings"] = _evaluation_warnings(split, results)
        TrainingRun.objects.filter(pk=run.pk).update(data_stats=data_stats)

        progress.start("test")
        for result in results.values():
            if result.validation:
                result.test = metrics.evaluate(result.recommender, split.test)
        # A single candidate chosen as it was fitted has its test metrics already (a wide catalog's test scoring of
        # one candidate is tens of seconds); a blend or a slot is scored as served.
        test_metrics = next(
            (r.test for r in results.values() if r.recommender is choice.recommender and r.test),
            None,
        ) or metrics.evaluate(choice.recommender, split.test)
        report = {
            r.name: {"validation": r.validation, "test": r.test, "fit": _jsonable(r.fit), "seconds": r.seconds}
            for r in results.values()
        }
        if choice.name not in report:
            report[choice.name] = {"validation": choice.validation, "test": test_metrics, "weights": choice.weights}
            if choice.cold_slot:
                report[choice.name]["cold_slot"] = choice.cold_slot
        TrainingRun.objects.filter(pk=run.pk).update(
            candidates=report, chosen=choice.name, validation_ndcg=choice.validation["ndcg"], test_metrics=test_metrics
        )

        progress.start("gate")
        gate = _gate(choice, results, split, data)
        progress.start("refit")
        model = refit(choice, results, data.interactions, data.features) if rec_settings.REFIT_ON_ALL else None
        model = model or choice.recommender
        progress.start("save")
        path, sha = artefacts.write_artefact(model, f"run-{run.pk}")
        # The check loads a second copy of the model: the fitted ones and the split go first, or at 200k products
        # the two copies side by side are what takes a retrain over its memory budget.
        del model, choice, results, split
        gc.collect()
        artefacts.verify_artefact(path, sha, data.features)
        progress.finish()
        return _register(run, path, sha, gate, data.data_until, progress.seconds)
    except liveness.RunLost:
        raise
    except Exception as exc:
        _record_failure(run, progress, exc)
        raise


def _record_failure(run: TrainingRun, progress: RunProgress, exc: Exception) -> None:
    stage = progress.stage
    if isinstance(exc, TrainingError):
        logger.warning("training run #%s stopped at stage %r: %s", run.pk, stage, exc)
    else:
        logger.exception("training run #%s failed at stage %r", run.pk, stage)
    liveness.fenced(TrainingRun, run.pk, run.attempts).update(
        status=TrainingRun.Status.FAILED,
        finished_at=timezone.now(),
        stage=stage,
        error=f"{exc}" if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}",
        message=f"Failed at {stage or 'start'}; the serving model is unchanged.",
        stage_seconds=progress.seconds,
    )


NO_VALIDATION = {
    "global": "no shopper has events on both sides of the validation cut",
    "per_shopper": "no shopper has enough history to hold out new items for validation",
}

# A shop too young to hold out a validation set (a hundred events) still gets a model: the first of these recipes
# that is configured, fitted on everything. It serves only when no model does, since nothing can compare them.
UNVALIDATED_RECIPES = ("content", "item_knn", "popularity")


def _train_unvalidated(
    run: TrainingRun, data: TrainingData, names: list[str], progress: RunProgress, why: str
) -> TrainingRun:
    name = next((n for n in UNVALIDATED_RECIPES if n in names), names[0])
    TrainingRun.objects.filter(pk=run.pk).update(
        data_stats={
            "events": data.interactions.n_events,
            "shoppers": data.interactions.n_shoppers,
            "products": data.features.n_items,
            "cleaning": data.cleaning,
            "split": {"skipped": why},
            "data_until": data.data_until.isoformat() if data.data_until else None,
        }
    )
    progress.start(f"fit {name}" if f"fit {name}" in progress.stages else "refit")
    model = build_candidate(name, float(rec_settings.RECENCY_HALF_LIFE_DAYS), class_params())
    fit_stats = model.fit(data.interactions, data.features, None, None) or {}
    serving = TrainingRun.objects.filter(is_serving=True).first()
    # Nothing measured can lose to nothing measured: newer data wins; a validated model is never replaced blind.
    replaces = serving is None or serving.validation_ndcg is None
    gate = {
        "passed": replaces,
        "reason": f"Too little data to validate ({why}): {name} fitted on every event, unmeasured; "
        + ("it serves, as no validated model does." if replaces else "the validated serving model stays."),
    }
    TrainingRun.objects.filter(pk=run.pk).update(
        candidates={name: {"validation": {}, "test": {}, "fit": _jsonable(fit_stats), "note": "not validated"}},
        chosen=name,
    )
    run.chosen = name
    progress.start("save")
    path, sha = artefacts.write_artefact(model, f"run-{run.pk}")
    artefacts.verify_artefact(path, sha, data.features)
    progress.finish()
    return _register(run, path, sha, gate, data.data_until, progress.seconds)


def _gate(choice: Choice, results: dict[str, CandidateResult], split: Split, data: TrainingData) -> dict[str, Any]:
    """Does the new choice beat the serving model on this run's validation set (by GATE_MARGIN)?

    The serving model is scored on the same validation shoppers when it learned nothing from the validation cut on;
    a model that did (it saw the answers) is compared through its recipe refit on this split instead. With a
    per_shopper split the cut is the earliest shopper's validation cut (every event before it is a train event), so
    a serving model is scored directly only if it predates every held-out event; usually it is the refit recipe.
    """
    margin = float(rec_settings.GATE_MARGIN)
    new = float(choice.validation["ndcg"])
    gate: dict[str, Any] = {"new_ndcg": new, "margin": margin}
    serving = TrainingRun.objects.filter(is_serving=True).first()
    if serving is None:
        gate.update(passed=True, reason="No model was serving.")
        return gate
    gate["serving_run"] = serving.pk
    cut = None
    if data.data_until is not None:
        cut = data.data_until - timedelta(days=split.valid_cut_days)
    old: float | None = None
    # Strictly before: an event at the cut itself is a held-out one (the first of a shopper's validation part).
    if serving.data_until is not None and cut is not None and serving.data_until < cut:
        try:
            old_model = artefacts.load_recommender(serving.artefact_path, serving.artefact_sha256, data.features)
        except artefacts.ArtefactError as exc:
            gate.update(passed=True, reason=f"The serving model cannot be loaded ({exc}).")
            return gate
        old = float(metrics.evaluate(old_model, split.validation)["ndcg"])
        gate["compared"] = "serving model on this validation set"
    elif serving.chosen == choice.name:
        old = new
        gate["compared"] = "same recipe as the serving model"
    elif serving.chosen in results and results[serving.chosen].validation:
        old = float(results[serving.chosen].validation["ndcg"])
        gate["compared"] = f"serving recipe {serving.chosen} refit on this split"
    elif (rebuilt := _serving_blend_on_this_split(serving, results)) is not None:
        old = float(metrics.evaluate(rebuilt, split.validation)["ndcg"])
        gate["compared"] = f"serving recipe {serving.chosen} rebuilt from this split's candidates"
    elif serving.validation_ndcg is not None and _split_mode(serving) == split.mode:
        old = float(serving.validation_ndcg)
        gate["compared"] = "serving model's own recorded validation NDCG"
    if old is None:
        # A score recorded on another kind of split (another question, other shoppers) says nothing here.
        gate.update(passed=True, reason="The serving model has no comparable score on this split.")
        return gate
    gate["serving_ndcg"] = old
    passed = new >= old + margin
    verb = "beats" if passed else "does not beat"
    gate.update(
        passed=passed,
        reason=f"New {choice.name} NDCG@10 {new:.4f} {verb} serving {serving.chosen or 'model'} {old:.4f}"
        f" + margin {margin:g}.",
    )
    return gate


def _split_mode(run: TrainingRun) -> str | None:
    """The split a run validated on ("global", "per_shopper"), as its data_stats recorded it."""
    split = (run.data_stats or {}).get("split")
    mode = split.get("mode") if isinstance(split, dict) else None
    return mode if isinstance(mode, str) else None


def _serving_blend_on_this_split(serving: TrainingRun, results: dict[str, CandidateResult]) -> Any:
    """The serving run's blend, with its recorded weights, over this run's refits of its components; None when
    it was no blend or a component is missing here (then its recorded score is all there is)."""
    name = serving.chosen or ""
    if not (name.startswith("blend(") and name.endswith(")")):
        return None
    components = name[len("blend(") : -1].split("+")
    weights = ((serving.candidates or {}).get(name) or {}).get("weights")
    if not isinstance(weights, list) or len(weights) != len(components):
        return None
    if any(c not in results or not results[c].validation for c in components):
        return None
    from recommendations.engine.blend import Blend

    return Blend([results[c].recommender for c in components], [float(w) for w in weights])


def _register(
    run: TrainingRun, path: Any, sha: str, gate: dict[str, Any], data_until: datetime | None, seconds: dict
) -> TrainingRun:
    """Record the artefact and, when the gate passed, make it the serving model, all in one transaction."""
    with transaction.atomic():
        # As the attempt that claimed the run: one that was taken over meanwhile registers nothing.
        locked = liveness.fenced(TrainingRun, run.pk, run.attempts).select_for_update().first()
        if locked is None:
            raise liveness.RunLost(f"training run #{run.pk}: attempt {run.attempts} no longer owns the run")
        run = locked
        run.artefact_path, run.artefact_sha256, run.data_until = str(path), sha, data_until
        run.gate, run.stage_seconds, run.progress, run.stage = gate, seconds, 1.0, "done"
        run.finished_at = timezone.now()
        if gate["passed"]:
            TrainingRun.objects.filter(is_serving=True).update(is_serving=False)
            run.is_serving, run.activated_at, run.activated_by = True, timezone.now(), "gate"
            run.status = TrainingRun.Status.SUCCEEDED
            run.message = f"Serving {run.chosen}. {gate['reason']}"
        else:
            run.status = TrainingRun.Status.KEPT_OLD
            run.message = f"Old model kept. {gate['reason']}"
        run.save()
        if gate["passed"]:
            # New lists from the new model (a receiver queues a precompute for when this commits).
            signals.model_activated.send(sender=TrainingRun, run_id=run.pk)
    return run


def activate(run_id: int, by: str) -> TrainingRun:
    """Make an earlier run's model serve again (staff rollback); refuses a run whose artefact fails its check."""
    run = TrainingRun.objects.get(pk=run_id)
    if not run.has_artefact:
        raise TrainingError(f"run #{run.pk} has no model to serve")
    features = current_features()
    artefacts.load_recommender(run.artefact_path, run.artefact_sha256, features)
    with transaction.atomic():
        TrainingRun.objects.filter(is_serving=True).update(is_serving=False)
        TrainingRun.objects.filter(pk=run.pk).update(is_serving=True, activated_at=timezone.now(), activated_by=by)
        signals.model_activated.send(sender=TrainingRun, run_id=run.pk)
    run.refresh_from_db()
    return run


ACTIVATION = "activation"
"""The key of a run's `gate` JSON that holds staff's newest request to make its model serve, and how it ended."""


def activation_request(run: TrainingRun) -> dict[str, Any]:
    """The run's newest activation request as recorded (empty when staff never asked): state is "pending",
    "activated", "refused" or "not_started"; `by`, `requested_at`, `finished_at`, `reason`, `before` say the rest."""
    return dict((run.gate or {}).get(ACTIVATION) or {})


def request_activation(run_id: int, by: str, user_id: int | None = None, note: str = "") -> str:
    """Record that staff asked for this run's model to serve, and return the request's token (the id of the task
    that carries it out). Loads nothing, so the web process may call it; a newer request replaces an older one."""
    token = uuid.uuid4().hex
    request = {"state": "pending", "token": token, "by": by, "user_id": user_id, "note": note}
    request["requested_at"] = timezone.now().isoformat()
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        TrainingRun.objects.filter(pk=run_id).update(gate={**(run.gate or {}), ACTIVATION: request})
    return token


def record_activation(run_id: int, token: str, state: str, **details: Any) -> bool:
    """Record how activation request `token` ended on its run (unless a newer request replaced it); True if it did."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        request = activation_request(run) if run else {}
        if request.get("token") != token:
            return False
        request.update(details, state=state, finished_at=timezone.now().isoformat())
        TrainingRun.objects.filter(pk=run_id).update(gate={**(run.gate or {}), ACTIVATION: request})
    return True


def _count_activation_attempt(run_id: int, token: str) -> int:
    """This delivery's number for request `token`, counted on the run before the model is loaded."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        request = activation_request(run)
        if request.get("token") != token:
            return 0
        request["attempts"] = int(request.get("attempts") or 0) + 1
        TrainingRun.objects.filter(pk=run_id).update(gate={**(run.gate or {}), ACTIVATION: request})
    return request["attempts"]


@dataclass(frozen=True)
class ActivationOutcome:
    """What carrying out an activation request did: state "activated" (serving now; `before` is the run that served
    until then), "refused" (`reason`), or "stale" (already carried out or replaced: nothing was done)."""

    state: str
    request: dict[str, Any] = field(default_factory=dict)
    run: TrainingRun | None = None
    before: int | None = None
    reason: str = ""


def activate_requested(run_id: int, token: str) -> ActivationOutcome:
    """In a training worker or a background process, never the web one: carry out staff's activation request `token`
    (hash-check and load the model, then make it serve) and record the outcome on the run, where its page shows it.

    A request already carried out or replaced by a newer one does nothing, so a redelivered message is harmless.
    """
    run = TrainingRun.objects.filter(pk=run_id).first()
    request = activation_request(run) if run else {}
    if request.get("token") != token or request.get("state") != "pending":
        return ActivationOutcome("stale", request=request, run=run)
    attempts = _count_activation_attempt(run_id, token)
    if attempts > int(rec_settings.RUN_MAX_ATTEMPTS):
        # Loading this model killed its worker every time (out of memory?): the message is redelivered after each
        # loss, so without a limit it would be handed from worker to worker for ever.
        reason = f"Gave up after {attempts - 1} attempts: the worker loading the model was lost each time."
        logger.error("activation of training run #%s: %s", run_id, reason)
        record_activation(run_id, token, "refused", reason=reason)
        return ActivationOutcome("refused", request=request, run=run, reason=reason)
    before = TrainingRun.objects.filter(is_serving=True).values_list("pk", flat=True).first()
    try:
        run = activate(run_id, by=str(request.get("by") or ""))
    except (TrainingError, artefacts.ArtefactError) as exc:
        logger.warning("activation of training run #%s refused: %s", run_id, exc)
        record_activation(run_id, token, "refused", reason=str(exc))
        return ActivationOutcome("refused", request=request, run=run, reason=str(exc))
    except Exception as exc:
        # Say so on the run rather than leave it "pending" for good; the task still fails loudly.
        record_activation(run_id, token, "refused", reason=f"{type(exc).__name__}: {exc}")
        raise
    record_activation(run_id, token, "activated", before=before if before != run_id else None)
    logger.info("training run #%s serves now (asked by %s; before: %s)", run_id, request.get("by"), before)
    return ActivationOutcome("activated", request=request, run=run, before=before if before != run_id else None)


def previous_model() -> TrainingRun | None:
    """The run whose model served just before the serving one: what a one-click rollback puts back.

    Found by activation time (the gate's or staff's); a run activated again counts at its newest activation, so two
    rollbacks in a row swap back. None when nothing serves or no other run ever served.
    """
    serving = TrainingRun.objects.filter(is_serving=True).first()
    if serving is None:
        return None
    earlier = TrainingRun.objects.filter(activated_at__isnull=False).exclude(pk=serving.pk)
    if serving.activated_at is not None:
        earlier = earlier.filter(activated_at__lte=serving.activated_at)
    return earlier.order_by("-activated_at", "-pk").first()


def current_features() -> ItemFeatures:
    """The current catalog's features (no events needed): what a loaded model is aligned to."""
    return dataset.item_features(loading.load_profile_rows())


def _prune_artefacts() -> None:
    """Keep the newest KEEP_MODELS artefacts and the serving one; forget the others' paths."""
    keep = int(rec_settings.KEEP_MODELS)
    with_artefacts = TrainingRun.objects.exclude(artefact_path="").order_by("-created_at", "-pk")
    kept = list(with_artefacts.values_list("pk", flat=True)[:keep])
    stale = with_artefacts.exclude(pk__in=kept).exclude(is_serving=True)
    stale.update(artefact_path="", artefact_sha256="")
    registered = set(TrainingRun.objects.exclude(artefact_path="").values_list("artefact_path", flat=True))
    artefacts.remove_unregistered(registered)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
