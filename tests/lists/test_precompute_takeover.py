"""A precompute whose worker was lost: taken over once, from a new set; the old set serves until the new one is whole;
an attempt that lost its run never switches a set on; the beat's recover_runs sends lost runs (and only those)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from recommendations import catalog, tracking
from recommendations.lists.precompute import run_precompute, run_shard
from recommendations.models import PrecomputeRun, RecommendationSet, StoredList, TrainingRun
from recommendations.tasks import precompute, recover_runs
from recommendations.training import liveness
from recommendations.training import runs as training
from tests.factories import make_category, make_product, recommendations_with

pytestmark = pytest.mark.django_db

ELSEWHERE = "another-host:4242/0badc0de"


@pytest.fixture
def shop():
    """Co-viewed pairs, and a first precompute whose set serves."""
    tools, toys = make_category(slug="tools"), make_category(slug="toys")
    products = [make_product(name, category=c) for name, c in (("Hammer", tools), ("Nails", tools), ("Kite", toys))]
    catalog.sync_products()
    events = []
    for n in range(4):
        events += [("view", f"a{n}", products[0]), ("view", f"a{n}", products[1]), ("view", f"k{n}", products[2])]
    tracking.store_events(tracking.build_event(t, visitor_id=v, product_id=p.pk) for t, v, p in events)
    return run_precompute().recommendation_set


def lost_run(*, half_written: bool, seconds_ago: float = 3600) -> tuple[PrecomputeRun, RecommendationSet]:
    """A run a worker claimed, started writing a set for, and then died (its heartbeat `seconds_ago`)."""
    beat = timezone.now() - timedelta(seconds=seconds_ago)
    half = RecommendationSet.objects.create(algorithm="cooccurrence")
    if half_written:
        StoredList.objects.create(recommendation_set=half, placement="trending", subject="", items=[["1", 1.0, "x"]])
    run = PrecomputeRun.objects.create(
        status="running",
        attempts=1,
        started_at=beat,
        heartbeat_at=beat,
        worker=ELSEWHERE,
        stage="similar",
        progress=0.4,
        recommendation_set=half,
    )
    return run, half


def test_a_lost_precompute_is_taken_over_from_a_new_set_and_switched_on_once(shop):
    run, half = lost_run(half_written=True)
    assert RecommendationSet.objects.get(status="active") == shop

    finished = run_precompute(run.pk, task_id="redelivered")
    assert finished.status == "succeeded" and finished.attempts == 2
    assert finished.task_id == "redelivered"
    assert [t["stage"] for t in finished.takeovers] == ["similar"]
    assert not RecommendationSet.objects.filter(pk=half.pk).exists(), "the lost attempt's half set is gone"
    active = RecommendationSet.objects.get(status="active")
    assert active.pk == finished.recommendation_set_id != shop.pk
    assert RecommendationSet.objects.get(pk=shop.pk).status == "retired"
    assert StoredList.objects.filter(recommendation_set=active).count() == sum(finished.stats["lists"].values())

    # The same message again (a late redelivery, a resend by recover_runs): nothing more happens.
    assert precompute.apply(args=[run.pk]).get()["status"] == "succeeded"
    assert PrecomputeRun.objects.get(pk=run.pk).attempts == 2
    assert RecommendationSet.objects.filter(status="active").get().pk == active.pk
    assert RecommendationSet.objects.count() == 2


def test_a_precompute_alive_in_another_worker_is_left_alone(shop):
    run, half = lost_run(half_written=True, seconds_ago=1)
    outcome = precompute.apply(args=[run.pk]).get()
    assert outcome == {"run_id": run.pk, "status": "running", "set_id": half.pk}
    assert PrecomputeRun.objects.get(pk=run.pk).attempts == 1
    assert set(RecommendationSet.objects.values_list("pk", "status")) == {(shop.pk, "active"), (half.pk, "building")}


@pytest.mark.parametrize("when", ["before the switch", "inside the switch"])
def test_an_attempt_taken_over_mid_run_never_switches_its_set_on(shop, when):
    run = PrecomputeRun.objects.create()
    seen: list[str] = []

    def another_worker_takes_over(stage: str, done: int, total: int) -> None:
        # As if this worker had stalled past RUN_STALE_SECONDS and another one claimed the run meanwhile: as the
        # "activate" stage starts, or once the set is marked active, inside the switch's transaction.
        inside = done == total
        if stage == "activate" and not seen and inside == (when == "inside the switch"):
            seen.append(stage)
            PrecomputeRun.objects.filter(pk=run.pk).update(attempts=F("attempts") + 1, heartbeat_at=timezone.now())

    outcome = run_precompute(run.pk, on_progress=another_worker_takes_over)
    assert seen == ["activate"]
    assert outcome.status == "running", "the run is the new attempt's to finish"
    if when == "before the switch":
        assert outcome.attempts == 2
    # (Inside the switch this test's stand-in for the other worker shares the rolled-back transaction.)
    assert RecommendationSet.objects.get(status="active") == shop, "the old set still serves"
    assert list(RecommendationSet.objects.values_list("pk", flat=True)) == [shop.pk], "its own set was deleted"


def test_a_shard_of_a_taken_over_attempt_or_held_by_a_live_worker_writes_nothing(shop):
    training.run_training(candidates=["item_knn"])
    run = run_precompute(shards=2)
    assert run.status == "running" and run.shards_to_send == run.attempts == 1
    assert run_shard(run.pk, 0, attempt=7) == {"shard": 0, "skipped": "taken over"}

    stats = {**run.stats, "shard_holders": {"1": ELSEWHERE}}
    PrecomputeRun.objects.filter(pk=run.pk).update(stats=stats, heartbeat_at=timezone.now())
    assert run_shard(run.pk, 1, attempt=1) == {"shard": 1, "skipped": "running elsewhere"}
    assert not StoredList.objects.filter(recommendation_set_id=run.recommendation_set_id, placement="for_you").exists()
    assert run_shard(run.pk, 0, attempt=1)["shoppers"] > 0


def test_recover_runs_sends_the_lost_runs_again_and_leaves_live_and_finished_ones(shop, settings):
    settings.RECOMMENDATIONS = recommendations_with(TASKS="inline", CANDIDATES=["popularity"])
    lost, half = lost_run(half_written=False)
    alive, _ = lost_run(half_written=False, seconds_ago=1)
    beat = timezone.now() - timedelta(hours=1)
    retrain = TrainingRun.objects.create(status="running", attempts=1, heartbeat_at=beat, worker=ELSEWHERE)

    sent = recover_runs()  # inline: each run it sends runs here and now
    assert sent == {"precompute": [lost.pk], "retrain": [retrain.pk]}
    lost.refresh_from_db()
    retrain.refresh_from_db()
    assert lost.status == "succeeded" and lost.attempts == 2 and len(lost.takeovers) == 1
    assert not RecommendationSet.objects.filter(pk=half.pk).exists()
    assert retrain.status in ("succeeded", "kept_old") and retrain.attempts == 2 and retrain.takeovers
    assert PrecomputeRun.objects.get(pk=alive.pk).attempts == 1
    assert liveness.lost_runs(PrecomputeRun) == []
    assert recover_runs() == {"precompute": [], "retrain": []}
