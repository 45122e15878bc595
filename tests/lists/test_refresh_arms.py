"""The near-real-time refresh of an experiment arm's "for_you@run<id>" list when that run's artefact is broken: the
refusal is remembered per run (one load attempt and one warning, not one per shopper event), the arm's shoppers keep
their lists, and a repaired artefact (or the end of the remembered refusal) brings the refresh back. Also the bound
on the models a worker keeps loaded. Real PostgreSQL, Redis and models trained and written by the engine."""

from __future__ import annotations

import gc
import logging
import os
import time
import weakref
from pathlib import Path

import pytest

from recommendations.conf import rec_settings
from recommendations.lists import refresh, serving_model
from recommendations.lists.precompute import run_precompute
from recommendations.models import Event, StoredList, TrainingRun
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import T_END, model_version_experiment, serving_and_candidate_runs, write_shop

pytestmark = pytest.mark.django_db

REFRESH_LOGGER = "recommendations.lists.refresh"


@pytest.fixture
def runs() -> tuple[TrainingRun, TrainingRun]:
    """A (popularity) serves; B (item_knn, which scores each shopper's own history) is the treatment's version."""
    return serving_and_candidate_runs(n_shoppers=120, n_items=60, seed=3)


@pytest.fixture
def arm(runs: tuple[TrainingRun, TrainingRun]) -> tuple[TrainingRun, int, dict[str, list]]:
    """A running for_you experiment with B in the treatment arm, precomputed: (B, the set id, B's arm lists)."""
    _, b = runs
    model_version_experiment(b, salt="b" * 32)
    set_id = run_precompute().recommendation_set_id
    stored = arm_lists(set_id, b)
    assert len(stored) >= 4
    return b, set_id, stored


def arm_lists(set_id: int, run: TrainingRun) -> dict[str, list]:
    return dict(
        StoredList.objects.filter(recommendation_set_id=set_id, placement=f"for_you@run{run.pk}").values_list(
            "subject", "items"
        )
    )


def buy_their_top_item(lists: dict[str, list], shoppers: list[str]) -> dict[str, str]:
    """Each shopper buys the first item of their arm list: a refresh that runs drops it from that list."""
    bought = {}
    for shopper in shoppers:
        top = lists[shopper][0][0]
        Event.objects.create(
            event_id=f"bought-{shopper}", event_type="purchase", shopper=shopper, product_id=top, occurred_at=T_END
        )
        bought[shopper] = top
    return bought


def break_artefact(run: TrainingRun) -> tuple[Path, bytes, os.stat_result]:
    """Alter one file of `run`'s artefact (same size); returns it, its good bytes and its stat once altered."""
    victim = sorted(Path(run.artefact_path).rglob("*.npz"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:-10] + b"0123456789")
    stat = victim.stat()
    # The refresh would otherwise score with the model loaded before the damage; a worker that restarts would not.
    serving_model.forget()
    return victim, good, stat


def arm_warnings(caplog: pytest.LogCaptureFixture, run: TrainingRun) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == REFRESH_LOGGER and r.levelno >= logging.WARNING and f"training run #{run.pk}" in r.getMessage()
    ]


def test_a_broken_arm_model_is_tried_once_warned_once_and_its_shoppers_keep_their_lists(arm, caplog):
    b, set_id, before = arm
    shoppers = sorted(before)[:4]
    bought = buy_their_top_item(before, shoppers)
    victim, good, stat = break_artefact(b)

    with caplog.at_level(logging.DEBUG, logger=REFRESH_LOGGER):
        for _ in range(3):
            for shopper in shoppers:
                assert refresh.refresh_shopper(shopper) is not None, "the serving model's list still refreshes"

    warned = arm_warnings(caplog, b)
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "hash check" in warned[0].getMessage()
    assert arm_lists(set_id, b) == before, "every arm shopper keeps the list the last good precompute wrote"

    # Good bytes back, but with the same size and mtime: the remembered refusal stands, so no load happens (a load
    # would now succeed and drop what they bought).
    victim.write_bytes(good)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=REFRESH_LOGGER):
        refresh.refresh_shopper(shoppers[0])
    assert arm_lists(set_id, b) == before
    assert not arm_warnings(caplog, b)
    assert any(f"training run #{b.pk} still refused" in r.getMessage() for r in caplog.records)

    # Broken differently (its files changed): tried again, still refused, and not warned about again.
    victim.write_bytes(good[:-10] + b"9876543210")
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=REFRESH_LOGGER):
        refresh.refresh_shopper(shoppers[0])
    assert arm_lists(set_id, b) == before
    assert not arm_warnings(caplog, b)

    # Repaired (the file is rewritten, its mtime moves): the next refresh of each shopper loads it again.
    victim.write_bytes(good)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns - 1_000_000_000))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=REFRESH_LOGGER):
        for shopper in shoppers:
            refresh.refresh_shopper(shopper)
    assert not arm_warnings(caplog, b)
    after = arm_lists(set_id, b)
    model = serving_model.load_run_model(b)
    for shopper in shoppers:
        assert bought[shopper] not in {pid for pid, _, _ in after[shopper]}
        assert after[shopper] == refresh.model_items(model, shopper, rec_settings.TOP_N)
    assert {s: after[s] for s in set(before) - set(shoppers)} == {s: before[s] for s in set(before) - set(shoppers)}


def test_a_remembered_refusal_expires_and_a_quiet_repair_is_then_picked_up(arm, caplog, monkeypatch):
    b, set_id, before = arm
    shopper = sorted(before)[0]
    bought = buy_their_top_item(before, [shopper])
    monkeypatch.setattr(serving_model, "REFUSAL_SECONDS", 0.5)
    victim, good, stat = break_artefact(b)

    with caplog.at_level(logging.DEBUG, logger=REFRESH_LOGGER):
        refresh.refresh_shopper(shopper)
    assert len(arm_warnings(caplog, b)) == 1
    assert arm_lists(set_id, b)[shopper] == before[shopper]

    # Repaired without any change a stat sees: only the end of the remembered refusal brings it back.
    victim.write_bytes(good)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(0.6)
    refresh.refresh_shopper(shopper)

    after = arm_lists(set_id, b)[shopper]
    assert bought[shopper] not in {pid for pid, _, _ in after}
    assert after == refresh.model_items(serving_model.load_run_model(b), shopper, rec_settings.TOP_N)


def test_the_worker_keeps_the_most_recently_used_models_and_frees_the_evicted_one(settings):
    data, features = make_shop(n_shoppers=60, n_items=30, seed=4)
    write_shop(data, features)
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "KEEP_MODELS": serving_model.MAX_CACHED + 2}
    candidates = ["popularity", "trending", "item_knn", "ease", "ease_recency"]
    trained = [training.run_training(candidates=[name]) for name in candidates]
    runs = [TrainingRun.objects.get(pk=run.pk) for run in trained]
    assert len(runs) == serving_model.MAX_CACHED + 1 and all(run.has_artefact for run in runs)

    first = serving_model.load_run_model(runs[0])
    second = serving_model.load_run_model(runs[1])
    dropped, dropped_model = weakref.ref(second), weakref.ref(second.model)
    del second
    for run in runs[2 : serving_model.MAX_CACHED]:
        serving_model.load_run_model(run)
    assert serving_model.load_run_model(runs[0]) is first, "a cache hit, which makes it the most recently used"
    kept = weakref.ref(first)
    del first

    serving_model.load_run_model(runs[-1])  # one more than the bound: the least recently used (runs[1]) goes
    gc.collect()

    assert dropped() is None and dropped_model() is None, "an evicted model is referenced nowhere else"
    assert kept() is not None and serving_model.load_run_model(runs[0]) is kept(), "the recently used one stays"


def serving_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == REFRESH_LOGGER and r.levelno >= logging.WARNING and "serving model refused" in r.getMessage()
    ]


def test_a_broken_serving_model_is_logged_once_and_a_repair_is_picked_up(arm, caplog):
    _, set_id, _ = arm
    a = TrainingRun.objects.get(is_serving=True)
    shoppers = sorted(
        StoredList.objects.filter(recommendation_set_id=set_id, placement="for_you").values_list("subject", flat=True)
    )[:3]
    lists = dict(
        StoredList.objects.filter(recommendation_set_id=set_id, placement="for_you", subject__in=shoppers).values_list(
            "subject", "items"
        )
    )
    bought = buy_their_top_item(lists, shoppers)
    victim, good, _ = break_artefact(a)

    with caplog.at_level(logging.DEBUG, logger=REFRESH_LOGGER):
        for _ in range(3):
            for shopper in shoppers:
                assert refresh.refresh_shopper(shopper) is None
    assert len(serving_errors(caplog)) == 1
    after = dict(
        StoredList.objects.filter(recommendation_set_id=set_id, placement="for_you", subject__in=shoppers).values_list(
            "subject", "items"
        )
    )
    assert after == lists, "they keep the lists the last good precompute wrote"

    victim.write_bytes(good)  # repaired: a new mtime, so the next refresh loads it
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=REFRESH_LOGGER):
        assert refresh.refresh_shopper(shoppers[0]) is not None
    assert not serving_errors(caplog)
    fresh = StoredList.objects.get(recommendation_set_id=set_id, placement="for_you", subject=shoppers[0]).items
    assert bought[shoppers[0]] not in [row[0] for row in fresh], "refreshed: what they just bought is left out"
