"""One precompute: events → trending, similar, bought_together, buy_again and for_you lists in a new
RecommendationSet, switched on atomically; plus, while a for_you experiment runs, the for_you lists of the model
versions its arms serve ("for_you@run<id>"), for those arms' shoppers only.

Every run is recorded as a PrecomputeRun (status, stage, progress, stats, error). The new set is written
while the old one keeps serving; only a complete set is activated, in one transaction, so a reader never
sees half a set, and a failed run deletes its partial set and leaves the old one active.

A serving model whose artefact is refused (missing, truncated, hash mismatch) costs only the for_you lists: the
shared lists (trending, similar, bought_together, buy_again) need no model and are computed as usual, the active
set's for_you lists are copied into the new set unchanged, and the run succeeds with the refusal in its stats,
its `error` text (the admin shows both) and the log. Event rows whose time cannot be read are left out and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import F, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from recommendations import keys, signals
from recommendations.conf import check_settings, event_weights, rec_settings
from recommendations.engine import cooccurrence, dataset, model_lists, purchases, reasons
from recommendations.experiments import assignment
from recommendations.lists import serving_model
from recommendations.lists.purchases import count_purchase_events, load_purchase_log
from recommendations.models import (
    Event,
    ExperimentVariant,
    PrecomputeRun,
    ProductProfile,
    RecommendationSet,
    StoredList,
    TrainingRun,
)
from recommendations.training import liveness, loading
from recommendations.training.artefacts import ArtefactError
from recommendations.training.progress import ProgressCallback, RunProgress

logger = logging.getLogger(__name__)


WRITE_BATCH = 1000
# Retired sets beyond the newest one are deleted; the active set plus one retired set stay for rollback.
KEEP_SETS = 2
# A set still "building" after this long belongs to a run that died without cleaning up.
ABANDONED_BUILD_AGE = timedelta(hours=24)

# Share of the progress bar each stage takes (roughly its share of the time on a real catalog).
STAGES: dict[str, float] = {
    "load events": 0.20,
    "purchases": 0.05,
    "build matrix": 0.05,
    "trending": 0.05,
    "similar": 0.30,
    "for_you": 0.20,
    "experiment lists": 0.05,
    "sales counts": 0.05,
    "activate": 0.05,
}


def validate_settings() -> None:
    """Refuse to run on settings the system check rejects, naming every problem."""
    errors = check_settings()
    if errors:
        raise ImproperlyConfigured("; ".join(error.msg for error in errors))


def _claim(run_id: int | None, task_id: str) -> liveness.Claim:
    """Claim the run for this process (training.liveness): a finished run, or one alive in another worker, is left
    as it is, so a redelivered or resent message does nothing. A run taken over from a lost worker starts again from
    a new set: the lost attempt's set (half written, never switched on) is deleted."""
    if run_id is None:
        return liveness.start_new(PrecomputeRun, task_id)
    claimed = liveness.claim(
        PrecomputeRun, run_id, task_id=task_id, reset={"recommendation_set": None, "stats": {}, "finished_at": None}
    )
    if claimed.why in ("taken over", "exhausted") and claimed.previous is not None:
        _discard_set(claimed.previous.recommendation_set_id)
    return claimed


def run_precompute(
    run_id: int | None = None,
    *,
    task_id: str = "",
    on_progress: ProgressCallback | None = None,
    shards: int = 1,
) -> PrecomputeRun:
    """Compute and activate a new set for run `run_id` (a new run when None); returns the finished run.

    With a trained model serving and `shards` > 1, the for_you stage is left to `run_shard` tasks: this returns
    the run still *running*, its stats holding the shard plan and its `shards_to_send` attribute the attempt whose
    shards the caller sends, and `finish_sharded` activates the set once every shard has written its shoppers.
    Raises whatever made the run fail, after recording it on the run and removing
    the partial set. A run finished or alive elsewhere is returned as it is; one whose worker was lost is taken over.
    """
    claimed = _claim(run_id, task_id)
    if claimed.attempt is None:
        logger.info("precompute run #%s: nothing to do (%s, %s)", claimed.run.pk, claimed.why, claimed.run.status)
        return claimed.run
    with liveness.Heartbeat(PrecomputeRun, claimed.run.pk, claimed.attempt) as heartbeat:
        return _attempt(claimed.run, claimed.attempt, heartbeat, on_progress, shards)


def _attempt(
    run: PrecomputeRun,
    attempt: int,
    heartbeat: liveness.Heartbeat,
    on_progress: ProgressCallback | None,
    shards: int,
) -> PrecomputeRun:
    """One attempt at run `run`: every write to the run's row is fenced by `attempt` (see training.liveness)."""
    progress = RunProgress(run, on_progress, STAGES, attempt=attempt)
    new_set: RecommendationSet | None = None
    try:
        validate_settings()
        served = serving_model.serving_run()
        algorithm = f"model: {served.chosen} (training run #{served.pk})" if served else "cooccurrence"
        new_set = RecommendationSet.objects.create(algorithm=algorithm[:60])
        liveness.fenced_update(PrecomputeRun, run.pk, attempt, recommendation_set=new_set)
        stats = _compute_and_write(new_set, progress, shards)
        heartbeat.check()
        if "shard_plan" in stats:
            progress.finish()
            stats["seconds"] = progress.seconds
            liveness.fenced_update(PrecomputeRun, run.pk, attempt, stage="for_you", stats=stats)
            run.refresh_from_db()
            run.shards_to_send = attempt  # only this call sends the shards: a redelivery finds the plan and sends none
            return run
        if "model_refused" in stats:
            new_set.algorithm = _kept_for_you_algorithm(stats["model_refused"])
            RecommendationSet.objects.filter(pk=new_set.pk).update(algorithm=new_set.algorithm)
        progress.start("sales counts")
        stats["sales_counts_changed"] = update_sales_counts()
        heartbeat.check()
        # Last, and in one transaction with the run's success, so any failure above leaves the old set serving and
        # an attempt that lost the run (taken over meanwhile) can never switch a set on.
        progress.start("activate")
        _switch_to(new_set.pk, finished_only=False, then=lambda: _succeed(run.pk, attempt, new_set, stats, progress))
    except liveness.RunLost as exc:
        # Taken over: the new attempt builds its own set; this one's goes, and nothing is recorded on the run.
        logger.warning("precompute run #%s: %s; this attempt stops", run.pk, exc)
        _discard(new_set)
        run.refresh_from_db()
        return run
    except Exception as exc:
        logger.exception("precompute run #%s failed at stage %r", run.pk, progress.stage)
        stage = progress.stage
        _discard(new_set)
        liveness.fenced(PrecomputeRun, run.pk, attempt).update(
            status=PrecomputeRun.Status.FAILED,
            finished_at=timezone.now(),
            stage=stage,
            error=f"{type(exc).__name__}: {exc}",
            stats={"seconds": progress.seconds},
        )
        raise
    _delete_old_sets_quietly()
    run.refresh_from_db()
    return run


def _succeed(
    run_id: int, attempt: int, new_set: RecommendationSet, stats: dict[str, Any], progress: RunProgress
) -> None:
    """Inside the switch's transaction: the run succeeds as `attempt`, or RunLost rolls the switch back."""
    progress.finish()
    stats["seconds"] = progress.seconds
    stats["seconds_total"] = round(sum(progress.seconds.values()), 3)
    # A run that succeeded with something staff must fix says so where a failure would (the admin shows it).
    _mark_succeeded(run_id, attempt, new_set, stats, error="\n".join(stats.get("warnings", [])))


def _mark_succeeded(
    run_id: int, attempt: int, new_set: RecommendationSet, stats: dict[str, Any], **fields: Any
) -> None:
    """The set's stats and the run's success as `attempt`, in the switch's transaction (RunLost rolls both back)."""
    RecommendationSet.objects.filter(pk=new_set.pk).update(stats=stats)
    liveness.fenced_update(
        PrecomputeRun,
        run_id,
        attempt,
        status=PrecomputeRun.Status.SUCCEEDED,
        finished_at=timezone.now(),
        progress=1.0,
        stage="done",
        stats=stats,
        **fields,
    )


def _delete_old_sets_quietly() -> None:
    # Housekeeping after the run succeeded: a failure here is the next run's to retry, never this run's failure.
    try:
        delete_old_sets()
    except Exception:
        logger.exception("could not delete old recommendation sets; the next precompute tries again")


def load_catalog() -> cooccurrence.CatalogView:
    """Every profile (active or not: inactive ones still carry co-occurrence signal, they are just never shown)."""
    rows = ProductProfile.objects.order_by("product_id").values_list(
        "product_id", "category", "active", "in_stock", "categories"
    )
    return cooccurrence.CatalogView.from_rows(rows.iterator(chunk_size=5000))


def list_params() -> cooccurrence.ListParams:
    return cooccurrence.ListParams(
        top_n=rec_settings.TOP_N,
        similar_n=rec_settings.SIMILAR_N,
        recency_half_life_days=float(rec_settings.RECENCY_HALF_LIFE_DAYS),
        trending_window_days=float(rec_settings.TRENDING_WINDOW_DAYS),
        trending_half_life_days=float(rec_settings.TRENDING_HALF_LIFE_DAYS),
    )


def purchase_params() -> purchases.PurchaseParams:
    return purchases.PurchaseParams(
        list_length=rec_settings.SIMILAR_N,
        window_minutes=float(rec_settings.PURCHASE_WINDOW_MINUTES),
        alpha=float(rec_settings.BOUGHT_TOGETHER_ALPHA),
        min_support=int(rec_settings.BOUGHT_TOGETHER_MIN_ORDERS),
        repeat_shrinkage=float(rec_settings.BUY_AGAIN_SHRINKAGE),
        min_repeat_score=float(rec_settings.BUY_AGAIN_MIN_SCORE),
    )


def _write_purchase_lists(
    writer: _ListWriter, catalog_view: cooccurrence.CatalogView, progress: RunProgress, events: dataset.EventLog
) -> dict[str, Any]:
    """bought_together and buy_again: shared lists, written once per precompute (never by a shard).

    The bots are those training drops, found in `events` (the whole event log, not purchases alone: a scraper's
    views make it a bot as much as its orders); `events` also says where the data ends, for buy_again's censoring.
    """
    bots = dataset.bot_shoppers(events, int(rec_settings.BOT_MAX_EVENTS_PER_MINUTE))
    progress.start("purchases", count_purchase_events() + len(catalog_view.item_ids))
    log = load_purchase_log(catalog_view.item_ids, on_row_chunk=progress.advance, leave_out=bots)
    stats: dict[str, Any] = {"bot_shoppers_left_out": len(bots)}
    lists = purchases.compute_lists(
        log, catalog_view, purchase_params(), progress, stats, observed_until_us=events.newest_us
    )
    for placement, subject, items in lists:
        writer.add(placement, subject, items)
    writer.flush()
    return stats


def _compute_and_write(new_set: RecommendationSet, progress: RunProgress, shards: int = 1) -> dict[str, Any]:
    weights = event_weights()
    catalog_view = load_catalog()
    warnings: list[str] = []
    refused: dict[str, Any] | None = None
    try:
        served = serving_model.load_serving_model(catalog_view.item_ids)
    except ArtefactError as exc:
        # Only for_you needs the model: the shared lists still refresh, and shoppers keep their last for_you lists.
        served = None
        run = serving_model.serving_run()
        refused = {"training_run": run.pk if run else None, "reason": str(exc), "kept_from_set": _active_set_id()}
    unreadable = loading.count_unreadable_events(weights)
    if unreadable:
        warnings.append(
            f"{unreadable} events were left out: their time cannot be read (outside the years 1 to 9999 in UTC)."
        )
        logger.warning("precompute: %s", warnings[-1])
    progress.start("load events", loading.count_training_events(weights))
    log = loading.load_event_log(catalog_view.item_ids, weights, on_row_chunk=progress.advance)

    writer = _ListWriter(new_set)
    purchase_stats = _write_purchase_lists(writer, catalog_view, progress, log)
    placement = ""
    # With a refused model and a set to keep for_you from, co-occurrence does not replace the model's lists.
    cooccurrence_for_you = served is None and (refused is None or refused["kept_from_set"] is None)
    lists = cooccurrence.compute_lists(log, catalog_view, list_params(), progress, for_you=cooccurrence_for_you)
    for placement_now, subject, items in lists:
        if placement_now != placement:
            writer.flush()
            placement = placement_now
        writer.add(placement_now, subject, items)
    writer.flush()
    model_stats: dict[str, Any] = {}
    if served is not None and shards > 1:
        model_stats = {
            "model_run": served.run_id,
            "model": served.chosen,
            "shard_plan": {
                "bounds": loading.shard_bounds(weights, shards),
                "reference_us": log.newest_us,
                "model_sha256": served.sha256,
            },
            "shards": {},
        }
    elif served is not None:
        model_stats = _model_for_you(served, log, catalog_view, writer, progress, log.newest_us)
        writer.flush()
    elif refused is not None:
        model_stats = {"model_refused": refused}
        if refused["kept_from_set"] is not None:
            progress.start("for_you")
            writer.flush()
            copied = _copy_lists(refused["kept_from_set"], new_set, "for_you")
            refused["for_you_lists"] = writer.counts["for_you"] = copied
            kept = f"for_you lists kept from set #{refused['kept_from_set']} ({refused['for_you_lists']} shoppers)"
        else:
            kept = "for_you lists from co-occurrence (there was no earlier set to keep them from)"
        warnings.append(
            f"The serving model (training run #{refused['training_run']}) was refused: {refused['reason']}. "
            f"Trending, similar and purchase lists are new; {kept}. Retrain, or serve another model in the admin."
        )
        logger.error("precompute: %s", warnings[-1])
    # Once for the whole log, sharded or not: the arms' shoppers are a share of everyone and this process holds
    # their events already; the shards write only "for_you" and so never touch these lists.
    experiment_stats = _experiment_lists(
        served, log, catalog_view, writer, progress, refused["training_run"] if refused else None
    )

    newest = log.newest_us
    return {
        "events_used": log.n_events,
        "shoppers": len(log.shoppers),
        "products": len(catalog_view.item_ids),
        "products_with_events": log.n_items_with_events,
        "newest_event": None
        if newest is None
        else (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=newest)).isoformat(),
        "lists": writer.counts,
        "purchases": purchase_stats,
        "unreadable_events_skipped": unreadable,
        **model_stats,
        **experiment_stats,
        **({"warnings": warnings} if warnings else {}),
    }


def _active_set_id() -> int | None:
    return (
        RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE)
        .order_by(F("activated_at").desc(nulls_last=True), "-pk")
        .values_list("pk", flat=True)
        .first()
    )


def _copy_lists(from_set_id: int, new_set: RecommendationSet, placement: str) -> int:
    """Copy one placement's lists from another set into `new_set` inside the database (one INSERT ... SELECT, no
    rows through Python: a million for_you lists copy in seconds); returns how many were copied."""
    opts = StoredList._meta
    qn = connection.ops.quote_name
    set_col, placement_col, subject_col, items_col = (
        qn(opts.get_field(name).column) for name in ("recommendation_set", "placement", "subject", "items")
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {qn(opts.db_table)} ({set_col}, {placement_col}, {subject_col}, {items_col}) "  # noqa: S608
            f"SELECT %s, {placement_col}, {subject_col}, {items_col} FROM {qn(opts.db_table)} "
            f"WHERE {set_col} = %s AND {placement_col} = %s",
            [new_set.pk, from_set_id, placement],
        )
        return max(cursor.rowcount, 0)


def _kept_for_you_algorithm(refused: dict[str, Any]) -> str:
    if refused.get("kept_from_set") is None:
        return "cooccurrence (serving model refused)"
    return f"cooccurrence; for_you kept from set #{refused['kept_from_set']}"[:60]


def _model_for_you(
    served: serving_model.ServedModel,
    log: dataset.EventLog,
    catalog_view: cooccurrence.CatalogView,
    writer: _ListWriter,
    progress: Any,
    reference_us: int | None,
    placement: str = "for_you",
    stage: str | None = "for_you",
) -> dict[str, Any]:
    """Every shopper's for_you list from `served` (bought items and inactive products left out), as `placement`.

    Ages count from `reference_us`, the newest event of the whole precompute, so a shard scores like the whole.
    `stage` None: the caller started the progress stage and this only advances it.
    """
    cleaned, _ = dataset.clean_log(log, float(rec_settings.BURST_SECONDS), int(rec_settings.BOT_MAX_EVENTS_PER_MINUTE))
    interactions, shoppers = dataset.to_interactions(cleaned, reference_us=reference_us)
    bought = _bought_by(cleaned, shoppers, interactions.n_items)
    if served.item_ids != catalog_view.item_ids:
        raise RuntimeError("the catalog changed while the precompute ran; the next run will pick it up")
    model = served.model
    ids = catalog_view.item_ids
    if stage is not None:
        progress.start(stage, interactions.n_shoppers)
    for rows in model_lists.recommend_chunks(
        model,
        interactions,
        bought,
        catalog_view.active,
        rec_settings.TOP_N,
        catalog_view.category_of_item,
        on_chunk=progress.advance,
    ):
        for code, items in rows:
            writer.add(
                placement,
                shoppers[code],
                [(ids[i], s, f"{reasons.BECAUSE_}{ids[a]}" if a >= 0 else reasons.FOR_YOU) for i, s, a in items],
            )
    return {"model_run": served.run_id, "model": served.chosen, "for_you_shoppers": interactions.n_shoppers}


def _experiment_lists(
    served: serving_model.ServedModel | None,
    log: dataset.EventLog,
    catalog_view: cooccurrence.CatalogView,
    writer: _ListWriter,
    progress: RunProgress,
    refused_serving_id: int | None = None,
) -> dict[str, Any]:
    """for_you lists, as "for_you@run<id>", from each model version that an arm of the running for_you experiment
    serves (the serving run's arm reads "for_you" itself), for the shoppers bucketed into that arm only: nobody
    else reads them, so the cost follows the arm's share. A model that fails to load is skipped with a warning and
    a note in the stats: its arm's shoppers get the serving model's list, and the precompute goes on.
    """
    progress.start("experiment lists")
    variants = assignment.running_for("for_you") or []
    # A refused serving model's arm reads "for_you" (kept from the last set), like the serving model's own arm.
    serving_id = served.run_id if served is not None else refused_serving_id
    codes_of: dict[int, list[int]] = {
        v["training_run_id"]: []
        for v in variants
        if v["strategy"] == ExperimentVariant.Strategy.MODEL_VERSION
        and v["training_run_id"] is not None
        and v["training_run_id"] != serving_id
    }
    if not codes_of:
        return {}
    for code, shopper in enumerate(log.shoppers):
        arm = assignment.arm_for(variants, shopper)
        if (
            arm is not None
            and arm.strategy == ExperimentVariant.Strategy.MODEL_VERSION
            and arm.training_run_id in codes_of
        ):
            codes_of[arm.training_run_id].append(code)
    progress.update("experiment lists", 0, sum(map(len, codes_of.values())))
    runs: dict[str, dict[str, int]] = {}
    skipped: dict[str, str] = {}
    for run_id, codes in sorted(codes_of.items()):
        placement = keys.arm_list("for_you", run_id)
        run = TrainingRun.objects.filter(pk=run_id).first()
        try:
            if run is None:
                raise ArtefactError(f"training run #{run_id} no longer exists")
            model = serving_model.load_run_model(run, catalog_view.item_ids)
        except ArtefactError as exc:
            logger.warning("precompute: no %s lists, its model is refused: %s", placement, exc)
            skipped[str(run_id)] = str(exc)
            progress.advance(len(codes))
            continue
        arm_log = dataset.only_shoppers(log, np.asarray(codes, dtype=np.int64))
        written = _model_for_you(model, arm_log, catalog_view, writer, progress, log.newest_us, placement, stage=None)
        writer.flush()
        runs[str(run_id)] = {"shoppers": written["for_you_shoppers"], "lists": writer.counts.get(placement, 0)}
    return {
        "experiment_lists": {"experiment": variants[0]["experiment_id"], "runs": runs, "skipped": skipped},
    }


class _ShardProgress:
    """A shard's progress: it owns no row of its own, so it only tells the caller."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.stage, self.done, self.total = "", 0, 1

    def start(self, stage: str, total: int = 1) -> None:
        self.stage, self.done, self.total = stage, 0, max(int(total), 1)

    def advance(self, amount: int = 1) -> None:
        self.done += int(amount)
        if self.callback is not None:
            self.callback(self.stage, self.done, self.total)


def run_shard(
    run_id: int,
    shard: int,
    worker: str = "",
    on_progress: ProgressCallback | None = None,
    attempt: int | None = None,
) -> dict:
    """Write the for_you lists of one shard's shoppers into the run's set (idempotent: rewrites its own rows).

    `attempt` is the run's attempt that planned the shard (None: the current one): a shard of an attempt that was
    taken over, a shard already written, or one another live process is writing does nothing.
    """
    started = time.monotonic()
    skip, attempt = _claim_shard(run_id, shard, attempt)
    if skip:
        return {"shard": shard, "skipped": skip}
    run = PrecomputeRun.objects.get(pk=run_id)
    plan = run.stats["shard_plan"]
    low, high = plan["bounds"][shard]
    new_set = RecommendationSet.objects.get(pk=run.recommendation_set_id)
    try:
        with liveness.Heartbeat(PrecomputeRun, run_id, attempt) as heartbeat:
            catalog_view = load_catalog()
            served = serving_model.load_serving_model(catalog_view.item_ids)
            if served is None or served.sha256 != plan["model_sha256"]:
                raise RuntimeError("the serving model changed while the precompute ran")
            weights = event_weights()
            log = loading.load_event_log(catalog_view.item_ids, weights, shopper_range=(low, high))
            # A redelivered shard starts from a clean slate: its shoppers' rows from an earlier try go first.
            mine = StoredList.objects.filter(recommendation_set=new_set, placement="for_you", subject__gte=low)
            (mine.filter(subject__lt=high) if high is not None else mine).delete()
            writer = _ListWriter(new_set)
            stats = _model_for_you(served, log, catalog_view, writer, _ShardProgress(on_progress), plan["reference_us"])
            writer.flush()
            heartbeat.check()
    except liveness.RunLost as exc:
        logger.warning("precompute run #%s shard %s: %s; the new attempt writes its own set", run_id, shard, exc)
        return {"shard": shard, "skipped": "taken over"}
    except Exception as exc:
        logger.exception("precompute run #%s shard %s failed", run_id, shard)
        _fail(run_id, attempt, new_set, f"shard {shard}: {type(exc).__name__}: {exc}", "for_you")
        raise
    report = {
        "worker": worker,
        "shoppers": stats["for_you_shoppers"],
        "lists": writer.counts["for_you"],
        "seconds": round(time.monotonic() - started, 3),
    }
    with transaction.atomic():
        locked = liveness.fenced(PrecomputeRun, run_id, attempt).select_for_update().first()
        if locked is None:
            return {"shard": shard, "skipped": "taken over"}
        locked.stats.setdefault("shards", {})[str(shard)] = report
        done = len(locked.stats["shards"])
        locked.progress = round(0.6 + 0.35 * done / len(plan["bounds"]), 4)
        locked.save(update_fields=["stats", "progress"])
    return {"shard": shard, **report}


def _claim_shard(run_id: int, shard: int, attempt: int | None) -> tuple[str, int]:
    """("", attempt) when this process is to write the shard; otherwise why not. Recorded under the run's row lock.

    A shard message delivered twice (a broker's visibility timeout passed while it ran) must not write the same rows
    from two processes at once: the second leaves it to the first while that one lives.
    """
    with transaction.atomic():
        locked = PrecomputeRun.objects.select_for_update().filter(pk=run_id).first()
        if locked is None or locked.status != PrecomputeRun.Status.RUNNING or locked.recommendation_set_id is None:
            return (locked.status if locked else "deleted"), 0
        if "shard_plan" not in locked.stats or (attempt is not None and locked.attempts != attempt):
            return "taken over", 0
        if str(shard) in locked.stats.get("shards", {}):
            return "done", 0
        me = liveness.this_process()
        holder = locked.stats.get("shard_holders", {}).get(str(shard))
        if holder and holder != me and not liveness.holder_gone(holder) and not liveness.is_lost(locked):
            return "running elsewhere", 0
        locked.stats.setdefault("shard_holders", {})[str(shard)] = me
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["stats", "heartbeat_at"])
        return "", locked.attempts


def finish_sharded(run_id: int, attempt: int | None = None) -> PrecomputeRun:
    """After every shard: sales counts, then switch the set on; a no-op for a run that is not waiting (finished, or
    `attempt` taken over since)."""
    run = PrecomputeRun.objects.get(pk=run_id)
    if run.status != PrecomputeRun.Status.RUNNING or "shard_plan" not in run.stats:
        return run
    if attempt is not None and run.attempts != attempt:
        return run
    attempt = run.attempts
    missing = set(map(str, range(len(run.stats["shard_plan"]["bounds"])))) - set(run.stats.get("shards", {}))
    if missing:
        raise RuntimeError(f"precompute run #{run_id}: shards {sorted(missing)} have not finished")
    new_set = RecommendationSet.objects.get(pk=run.recommendation_set_id)
    try:
        stats = dict(run.stats)
        stats["sales_counts_changed"] = update_sales_counts()
        counts = dict(stats.get("lists", {}))
        counts["for_you"] = StoredList.objects.filter(recommendation_set=new_set, placement="for_you").count()
        stats["lists"] = counts
        _switch_to(new_set.pk, finished_only=False, then=lambda: _mark_succeeded(run_id, attempt, new_set, stats))
    except liveness.RunLost:
        logger.warning("precompute run #%s was taken over before its shards' set was switched on", run_id)
        run.refresh_from_db()
        return run
    except Exception as exc:
        _fail(run_id, attempt, new_set, f"{type(exc).__name__}: {exc}", "activate")
        raise
    _delete_old_sets_quietly()
    run.refresh_from_db()
    return run


def _fail(run_id: int, attempt: int, new_set: RecommendationSet | None, error: str, stage: str) -> None:
    # Only as the attempt that owns the run: a taken-over attempt's failure is not the run's.
    if liveness.fenced(PrecomputeRun, run_id, attempt).update(
        status=PrecomputeRun.Status.FAILED, finished_at=timezone.now(), stage=stage, error=error
    ):
        _discard(new_set)


def _bought_by(log: dataset.EventLog, shoppers: list[str], n_items: int) -> Any:
    """Shopper (in `shoppers` order) x item purchases, for leaving bought items out."""
    import scipy.sparse as sp

    position = {key: i for i, key in enumerate(shoppers)}
    code_of_log_shopper = np.array([position.get(key, -1) for key in log.shoppers], dtype=np.int64)
    rows = code_of_log_shopper[log.shopper_idx[log.is_purchase]] if log.n_events else np.zeros(0, dtype=np.int64)
    cols = log.item_idx[log.is_purchase] if log.n_events else np.zeros(0, dtype=np.int64)
    keep = rows >= 0
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int8), (rows[keep], cols[keep])), shape=(len(shoppers), n_items)
    )
    matrix.sum_duplicates()
    return matrix


class _ListWriter:
    """Buffers StoredList rows for one set and writes them in batches."""

    def __init__(self, recommendation_set: RecommendationSet) -> None:
        self.set = recommendation_set
        self.buffer: list[StoredList] = []
        self.counts: dict[str, int] = {"for_you": 0, "similar": 0, "trending": 0}

    def add(self, placement: str, subject: str, items: Iterable[tuple[Any, ...]]) -> None:
        # Items are (product_id, score, reason, *extra); buy_again carries its repurchase interval as the 4th.
        rows = [[pid, round(float(score), 6), reason, *extra] for pid, score, reason, *extra in items]
        if not rows:
            return
        self.buffer.append(StoredList(recommendation_set=self.set, placement=placement, subject=subject, items=rows))
        self.counts[placement] = self.counts.get(placement, 0) + 1
        if len(self.buffer) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        with transaction.atomic():
            StoredList.objects.bulk_create(self.buffer, batch_size=WRITE_BATCH)
        self.buffer = []


def activate_set(set_id: int) -> RecommendationSet:
    """Roll back (or forward) to a finished set: it becomes the one readers see, the others retire."""
    return _switch_to(set_id, finished_only=True)


def _switch_to(set_id: int, finished_only: bool, then: Callable[[], None] | None = None) -> RecommendationSet:
    """Make set `set_id` the active one; `then` runs inside the same transaction (a run's success: if it raises,
    nothing switched)."""
    with transaction.atomic():
        target = RecommendationSet.objects.select_for_update().get(pk=set_id)
        if finished_only and target.status == RecommendationSet.Status.BUILDING:
            # A building set may be half written by a run still going.
            raise ValueError(_("Set #%(set)s is still building and cannot be activated.") % {"set": set_id})
        RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE).exclude(pk=set_id).update(
            status=RecommendationSet.Status.RETIRED
        )
        target.status = RecommendationSet.Status.ACTIVE
        target.activated_at = timezone.now()
        target.save(update_fields=["status", "activated_at"])
        if then is not None:
            then()
    # After the commit: a reader that refills the cache now finds the new set.
    signals.set_activated.send(sender=RecommendationSet, set_id=target.pk)
    return target


def _delete_sets(set_ids: list[int]) -> None:
    if not set_ids:
        return
    # One DELETE for the (many) lists, then the sets themselves.
    StoredList.objects.filter(recommendation_set_id__in=set_ids).delete()
    RecommendationSet.objects.filter(pk__in=set_ids).delete()


def _discard_set(set_id: int | None) -> None:
    """Delete set `set_id` if it is still building (a lost attempt's): a set that ever served is never touched."""
    if set_id is not None:
        _discard(RecommendationSet(pk=set_id))


def _discard(recommendation_set: RecommendationSet | None) -> None:
    if recommendation_set is None:
        return
    try:
        _delete_sets(
            list(
                RecommendationSet.objects.filter(
                    pk=recommendation_set.pk, status=RecommendationSet.Status.BUILDING
                ).values_list("pk", flat=True)
            )
        )
    except Exception:
        logger.exception("could not delete the partial set #%s", recommendation_set.pk)


def delete_old_sets(keep: int = KEEP_SETS) -> int:
    """Delete retired sets beyond the newest `keep` sets, and builds abandoned by dead runs; returns how many."""
    kept = list(
        RecommendationSet.objects.exclude(status=RecommendationSet.Status.BUILDING)
        .order_by(F("activated_at").desc(nulls_last=True), "-pk")
        .values_list("pk", "status")
    )
    active = [pk for pk, status in kept if status == RecommendationSet.Status.ACTIVE]
    retired = [pk for pk, status in kept if status == RecommendationSet.Status.RETIRED]
    doomed = retired[max(keep - len(active), 0) :]
    doomed += list(
        RecommendationSet.objects.filter(
            status=RecommendationSet.Status.BUILDING, created_at__lt=timezone.now() - ABANDONED_BUILD_AGE
        ).values_list("pk", flat=True)
    )
    _delete_sets(doomed)
    return len(doomed)


def update_sales_counts() -> int:
    """Set every profile's sales_count to the units bought in purchase events; returns how many changed."""
    sold = {
        row["product_id"]: max(int(row["units"] or 0), 0)
        for row in Event.objects.filter(event_type="purchase")
        .exclude(product_id="")
        .values("product_id")
        .annotate(units=Sum("quantity"))
    }
    changed: list[ProductProfile] = []
    for pk, product_id, current in ProductProfile.objects.values_list("pk", "product_id", "sales_count").iterator(
        chunk_size=5000
    ):
        units = sold.get(product_id, 0)
        if units != current:
            changed.append(ProductProfile(pk=pk, sales_count=units))
    for start in range(0, len(changed), WRITE_BATCH):
        with transaction.atomic():
            ProductProfile.objects.bulk_update(changed[start : start + WRITE_BATCH], ["sales_count"])
    return len(changed)
