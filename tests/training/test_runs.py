"""Retraining end to end on PostgreSQL: candidates, registry, gate, artefact checks, rollback, single flight."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import psycopg2
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from recommendations.engine.split import temporal_split
from recommendations.lists import serving_model
from recommendations.lists.precompute import run_precompute
from recommendations.lists.refresh import refresh_shopper
from recommendations.models import Event, ProductProfile, RecommendationSet, StoredList, TrainingRun
from recommendations.training import artefacts
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import T_END, write_shop

pytestmark = pytest.mark.django_db

FAST = ["popularity", "item_knn"]


@pytest.fixture
def shop():
    data, features = make_shop(n_shoppers=200, n_items=80, seed=1)
    write_shop(data, features)
    return data, features


def test_a_run_fits_every_candidate_and_registers_the_best_as_serving(shop):
    run = training.run_training(candidates=FAST)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.is_serving and run.activated_by == "gate"
    assert set(FAST) <= set(run.candidates)
    knn, pop = run.candidates["item_knn"], run.candidates["popularity"]
    assert knn["validation"]["ndcg"] > pop["validation"]["ndcg"]
    assert {"ndcg", "recall", "hr", "mrr", "coverage", "cold_recall"} <= set(run.test_metrics)
    assert run.chosen in run.candidates
    assert run.candidates[run.chosen]["validation"]["ndcg"] == pytest.approx(run.validation_ndcg)
    assert {"load events", "clean", "split", "fit item_knn", "refit", "save"} <= set(run.stage_seconds)
    assert run.data_stats["events"] > 1000 and run.data_stats["split"]["validation_shoppers"] > 0
    assert run.progress == 1.0
    assert Path(run.artefact_path).is_dir()
    assert artefacts.digest(Path(run.artefact_path)) == run.artefact_sha256
    assert not list(Path(run.artefact_path).rglob("*.pkl"))
    assert run.data_until == Event.objects.order_by("-occurred_at").first().occurred_at


def test_precompute_writes_for_you_from_the_serving_model(shop):
    run = training.run_training(candidates=FAST)
    shopper = Event.objects.filter(event_type="purchase").values_list("shopper", flat=True).first()
    bought = set(Event.objects.filter(shopper=shopper, event_type="purchase").values_list("product_id", flat=True))

    precompute = run_precompute()

    new_set = RecommendationSet.objects.get(pk=precompute.recommendation_set_id)
    assert new_set.algorithm.startswith(f"model: {run.chosen}")
    assert precompute.stats["model_run"] == run.pk
    items = StoredList.objects.get(recommendation_set=new_set, placement="for_you", subject=shopper).items
    assert len(items) == 50
    assert not bought & {pid for pid, _, _ in items}
    assert all(reason.startswith("because:") or reason == "for_you" for _, _, reason in items)
    scores = [score for _, score, _ in items]
    assert scores == sorted(scores, reverse=True)
    # Trending and similar still come from co-occurrence.
    assert StoredList.objects.filter(recommendation_set=new_set, placement="similar").exists()


def test_the_gate_keeps_the_serving_model_when_the_new_one_is_worse(shop, settings):
    # A global cut: the second run's validation window lies wholly after the first model's data.
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SPLIT": "global"}
    first = training.run_training(candidates=["item_knn"])
    # A month of newer behaviour: the next run's validation window lies after what the first model learned.
    data, features = make_shop(n_shoppers=200, n_items=80, seed=2)
    write_shop(data, features, end=T_END + timedelta(days=61), prefix="u:n")

    second = training.run_training(candidates=["popularity"])

    assert second.status == TrainingRun.Status.KEPT_OLD
    assert not second.is_serving
    first.refresh_from_db()
    assert first.is_serving
    assert second.gate["passed"] is False
    assert second.gate["compared"] == "serving model on this validation set"
    assert second.gate["serving_ndcg"] > second.gate["new_ndcg"]
    assert "does not beat" in second.message
    assert second.has_artefact  # kept for staff, who may still activate it


def test_a_better_model_replaces_the_serving_one_unless_the_margin_says_no(shop, settings):
    first = training.run_training(candidates=["popularity"])
    data, features = make_shop(n_shoppers=200, n_items=80, seed=2)
    write_shop(data, features, end=T_END + timedelta(days=61), prefix="u:n")

    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "GATE_MARGIN": 1.0}
    blocked = training.run_training(candidates=["item_knn"])
    assert blocked.status == TrainingRun.Status.KEPT_OLD

    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "GATE_MARGIN": 0.0}
    better = training.run_training(candidates=["item_knn"])
    assert better.status == TrainingRun.Status.SUCCEEDED
    first.refresh_from_db()
    assert better.is_serving and not first.is_serving
    assert better.gate["new_ndcg"] > better.gate["serving_ndcg"]
    assert TrainingRun.objects.filter(is_serving=True).count() == 1


def _serving_stand_in(chosen: str, ndcg: float, mode: str, **fields) -> TrainingRun:
    """A serving run known only by its record (no artefact, no data_until): the gate cannot score it directly."""
    return TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED,
        is_serving=True,
        chosen=chosen,
        validation_ndcg=ndcg,
        data_stats={"split": {"mode": mode}},
        **fields,
    )


def test_the_gate_rebuilds_a_serving_blend_from_this_splits_candidates(shop, settings):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SPLIT": "global", "BLEND": False}
    name = "blend(popularity+item_knn)"
    _serving_stand_in(name, 0.99, "per_shopper", candidates={name: {"weights": [0.3, 0.7]}})
    run = training.run_training(candidates=["popularity", "item_knn"])
    assert run.gate["compared"] == f"serving recipe {name} rebuilt from this split's candidates"
    assert 0 < run.gate["serving_ndcg"] < 0.99  # scored here, not the number recorded on another split


def test_a_score_recorded_on_another_kind_of_split_is_not_compared(shop, settings):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SPLIT": "global"}
    _serving_stand_in("ease", 0.99, "per_shopper")
    run = training.run_training(candidates=["popularity"])
    assert run.gate["passed"] is True and run.is_serving
    assert "no comparable score on this split" in run.gate["reason"]


def test_a_score_recorded_on_the_same_kind_of_split_still_gates(shop, settings):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SPLIT": "global"}
    _serving_stand_in("ease", 0.99, "global")
    run = training.run_training(candidates=["popularity"])
    assert run.gate["compared"] == "serving model's own recorded validation NDCG"
    assert run.gate["passed"] is False and run.status == TrainingRun.Status.KEPT_OLD


def test_a_per_shopper_split_trains_and_gates_on_the_earliest_held_out_event(shop, settings):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SPLIT": "per_shopper"}
    first = training.run_training(candidates=["popularity"])
    assert first.status == TrainingRun.Status.SUCCEEDED, first.error
    split_stats = first.data_stats["split"]
    assert split_stats["mode"] == "per_shopper" and split_stats["validation_shoppers"] > 100

    # The gate of a next run on the same events: the serving model learned every event, held-out ones included.
    data = training.build_training_data()
    split = temporal_split(data.interactions, data.features, mode="per_shopper")
    results = training.fit_candidates(split, data.features, ["popularity", "item_knn"])
    choice = training.choose(results, split, blend=False)
    assert choice.name == "item_knn"
    gate = training._gate(choice, results, split, data)
    assert gate["compared"] == "serving recipe popularity refit on this split"
    assert gate["serving_ndcg"] == pytest.approx(results["popularity"].validation["ndcg"])

    # Scored directly only when it predates the earliest shopper's validation cut; at the cut it saw a held-out event.
    earliest = data.data_until - timedelta(days=split.valid_cut_days)
    assert data.data_until - earliest > timedelta(days=10)  # per shopper: some shopper's cut lies far back
    TrainingRun.objects.filter(pk=first.pk).update(data_until=earliest)
    assert training._gate(choice, results, split, data)["compared"] == "serving recipe popularity refit on this split"
    TrainingRun.objects.filter(pk=first.pk).update(data_until=earliest - timedelta(minutes=1))
    direct = training._gate(choice, results, split, data)
    assert direct["compared"] == "serving model on this validation set"
    assert direct["serving_ndcg"] > 0


def test_a_corrupt_artefact_is_refused_and_the_previous_lists_keep_serving(shop):
    run = training.run_training(candidates=FAST)
    good = run_precompute()
    shopper = StoredList.objects.filter(placement="for_you").values_list("subject", flat=True).first()
    before = StoredList.objects.get(recommendation_set_id=good.recommendation_set_id, subject=shopper).items
    victim = sorted(p for p in Path(run.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    serving_model.forget()

    with pytest.raises(artefacts.ArtefactError, match="hash check"):
        serving_model.load_serving_model()
    # The shared lists still refresh; the for_you lists are carried over (tests/lists/test_serving_model.py).
    kept = run_precompute()
    assert "hash check" in kept.stats["model_refused"]["reason"]
    active = RecommendationSet.objects.get(status=RecommendationSet.Status.ACTIVE).pk
    assert active == kept.recommendation_set_id
    assert StoredList.objects.get(recommendation_set_id=active, placement="for_you", subject=shopper).items == before
    Event.objects.create(event_id="late", event_type="purchase", shopper=shopper, product_id=before[0][0])
    assert refresh_shopper(shopper) is None
    assert StoredList.objects.get(recommendation_set_id=active, placement="for_you", subject=shopper).items == before
    with pytest.raises(artefacts.ArtefactError):
        training.activate(run.pk, by="staff")


def test_a_missing_artefact_is_refused(shop):
    run = training.run_training(candidates=["popularity"])
    for path in Path(run.artefact_path).iterdir():
        path.unlink()
    Path(run.artefact_path).rmdir()
    with pytest.raises(artefacts.ArtefactError, match="missing"):
        serving_model.load_serving_model()


def test_staff_can_roll_back_to_an_earlier_model(shop):
    first = training.run_training(candidates=["popularity"])
    second = training.run_training(candidates=["item_knn"])
    assert second.is_serving

    training.activate(first.pk, by="alice")

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.is_serving and first.activated_by == "alice"
    assert not second.is_serving
    assert serving_model.load_serving_model().run_id == first.pk


def test_a_second_retrain_skips_while_one_holds_the_lock(shop):
    settings_dict = connection.settings_dict
    other = psycopg2.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"],
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
    )
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [training.LOCK_KEY])
        run = training.run_training(candidates=FAST)
    finally:
        other.close()
    assert run.status == TrainingRun.Status.SKIPPED
    assert "another retrain" in run.message
    assert not TrainingRun.objects.filter(is_serving=True).exists()
    # The lock dies with its connection (the server ends that backend a moment after the client closes it): then the
    # next retrain runs.
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())",
                [training.LOCK_KEY],
            )
            if cursor.fetchone()[0] == 0:
                break
            assert time.monotonic() < deadline, "the advisory lock outlived its connection"
            time.sleep(0.05)
    assert training.run_training(candidates=["popularity"]).status == TrainingRun.Status.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_retrains_never_run_at_once():
    data, features = make_shop(n_shoppers=200, n_items=80, seed=1)
    write_shop(data, features)
    inside = threading.Event()
    release = threading.Event()
    results: dict[str, TrainingRun] = {}

    def first_progress(stage: str, done: int, total: int) -> None:
        if stage.startswith("fit"):
            inside.set()
            release.wait(30)

    def first() -> None:
        try:
            results["first"] = training.run_training(candidates=["item_knn"], on_progress=first_progress)
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(30)
    results["second"] = training.run_training(candidates=["item_knn"])
    release.set()
    thread.join(60)

    assert results["second"].status == TrainingRun.Status.SKIPPED
    assert f"run #{results['first'].pk}" in results["second"].message
    assert results["first"].status == TrainingRun.Status.SUCCEEDED


def test_a_run_left_behind_by_a_dead_worker_is_closed_and_a_redelivery_starts_it_over(shop, _model_dir):
    dead = TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, progress=0.4, stage="fit item_knn")
    leftover = Path(_model_dir) / f"run-{dead.pk}.tmp"
    leftover.mkdir()
    (leftover / "params.json").write_text("{}")

    # The broker redelivers the dead run's message (acks_late): it starts over and finishes.
    again = training.run_training(dead.pk, candidates=FAST)
    assert again.pk == dead.pk and again.status == TrainingRun.Status.SUCCEEDED
    assert not leftover.exists()
    # A second delivery of a finished run changes nothing.
    assert training.run_training(dead.pk, candidates=["popularity"]).chosen == again.chosen

    stuck = TrainingRun.objects.create(status=TrainingRun.Status.RUNNING)
    fresh = training.run_training(candidates=["popularity"])
    stuck.refresh_from_db()
    assert stuck.status == TrainingRun.Status.FAILED and "Interrupted" in stuck.error
    assert fresh.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.KEPT_OLD)


def test_refresh_uses_the_serving_model(shop):
    training.run_training(candidates=["item_knn"])
    run_precompute()
    shopper = "u:newcomer"
    coffee_like = list(ProductProfile.objects.filter(category="cat2").values_list("product_id", flat=True))
    for i, pid in enumerate(coffee_like[:4]):
        Event.objects.create(event_id=f"n{i}", event_type="view", shopper=shopper, product_id=pid, occurred_at=T_END)

    assert refresh_shopper(shopper) == 50
    items = StoredList.objects.get(placement="for_you", subject=shopper, recommendation_set__status="active").items
    top = [pid for pid, _, _ in items[:5]]
    assert set(top) <= set(ProductProfile.objects.filter(category="cat2").values_list("product_id", flat=True))
    assert items[0][2].startswith("because:")


def test_training_with_no_events_fails_with_one_clear_line():
    ProductProfile.objects.create(product_id="1", name="Lonely")
    with pytest.raises(training.TrainingError, match="no training events"):
        training.run_training(candidates=FAST)
    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.FAILED and "no training events" in run.error
    with pytest.raises(CommandError, match="training failed: there are no training events"):
        call_command("train_recommender", "--no-progress", "--candidates", "popularity")


def test_the_command_prints_the_candidate_table(shop):
    out = StringIO()
    call_command("train_recommender", "--no-progress", "--candidates", "popularity,item_knn", stdout=out)
    text = out.getvalue()
    assert "Succeeded: new model serving" in text
    assert "val ndcg" in text and "test ndcg" in text
    assert "item_knn" in text and "popularity" in text
    with pytest.raises(CommandError, match="unknown nope"):
        call_command("train_recommender", "--candidates", "nope")


def test_without_tensorflow_the_neural_candidate_is_left_out_and_the_numpy_ones_serve(shop, monkeypatch):
    """A web-only install (no `[neural]` extra) still trains: the table says why the deep model is missing."""
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "tensorflow" or name.startswith("tensorflow.") else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    out = StringIO()
    call_command("train_recommender", "--no-progress", "--candidates", "popularity,item_knn,neural", stdout=out)
    text = out.getvalue()
    assert "Succeeded: new model serving" in text
    neural_line = next(line for line in text.splitlines() if line.startswith("neural"))
    assert "TensorFlow is not installed" in neural_line and "[neural]" in neural_line
    assert not any(line != line.rstrip() for line in text.splitlines()), "the table pads lines with spaces"
    run = TrainingRun.objects.get(is_serving=True)
    assert run.chosen and "neural" not in run.chosen
    assert "skipped" in run.candidates["neural"]["fit"]


def test_shards_write_exactly_the_lists_of_an_unsharded_precompute(shop):
    from recommendations.lists.precompute import finish_sharded, run_shard

    training.run_training(candidates=["item_knn"])
    whole = run_precompute()
    expected = dict(
        StoredList.objects.filter(recommendation_set_id=whole.recommendation_set_id, placement="for_you").values_list(
            "subject", "items"
        )
    )

    run = run_precompute(shards=3)
    assert run.status == "running" and len(run.stats["shard_plan"]["bounds"]) == 3
    assert RecommendationSet.objects.get(status="active").pk == whole.recommendation_set_id  # not switched yet
    with pytest.raises(RuntimeError, match="have not finished"):
        finish_sharded(run.pk)
    reports = [run_shard(run.pk, shard, worker="here") for shard in (2, 0, 1, 1)]  # shard 1 redelivered
    finished = finish_sharded(run.pk)

    assert finished.status == "succeeded"
    assert sum(r["shoppers"] for r in reports[:3]) == len(expected)
    got = dict(
        StoredList.objects.filter(recommendation_set_id=run.recommendation_set_id, placement="for_you").values_list(
            "subject", "items"
        )
    )
    assert got == expected
    assert RecommendationSet.objects.get(status="active").pk == run.recommendation_set_id


def test_the_refit_keeps_what_validation_chose(shop):
    split_fit = {"chosen": {"betas": [1.0, 0.0, 0.0], "gamma": 2.0}}
    data, features = make_shop(n_shoppers=50, n_items=30, seed=3)
    from recommendations.engine.content import ContentAffinity

    fitted = ContentAffinity()
    fitted.fit(data, features)
    results = {"content": training.CandidateResult("content", fitted, {"ndcg": 0.1}, split_fit, 0.0)}
    choice = training.Choice("content", fitted, {"ndcg": 0.1}, ["content"], [1.0])
    model = training.refit(choice, results, data, features)
    assert model is not fitted
    assert model.chosen == {"betas": [1.0, 0.0, 0.0], "gamma": 2.0, "cold_boost": 1.0}


@pytest.mark.parametrize("candidate", ["content", "neural", "sequence"])
def test_a_new_product_reaches_the_shoppers_whose_taste_matches_its_features(shop, candidate):
    training.run_training(candidates=[candidate])
    ProductProfile.objects.create(
        product_id="new-cat2", name="item new cat2", category="cat2", brand="brand1", price=40, text="tea leaf"
    )
    run_precompute()

    active = RecommendationSet.objects.get(status="active")
    category_of = dict(ProductProfile.objects.values_list("product_id", "category"))
    fans, others = [], []
    for shopper, items in StoredList.objects.filter(recommendation_set=active, placement="for_you").values_list(
        "subject", "items"
    ):
        seen = [category_of[p] for p in Event.objects.filter(shopper=shopper).values_list("product_id", flat=True)]
        share = seen.count("cat2") / len(seen)
        top = [pid for pid, _, _ in items[:20]]
        (fans if share >= 0.5 else others if share == 0 else []).append("new-cat2" in top)
    assert len(fans) > 10 and len(others) > 10
    fan_rate, other_rate = sum(fans) / len(fans), sum(others) / len(others)
    # It has no events at all: only its category, brand, price and text can put it there.
    assert fan_rate >= 1 / 3
    assert other_rate <= fan_rate / 2


def test_a_model_whose_artefact_fails_verification_never_serves(shop, monkeypatch):
    from recommendations.engine import candidates
    from recommendations.engine.baselines import Popularity

    serving = training.run_training(candidates=["popularity"])

    class Pickler(Popularity):
        """Writes a file type the artefact store refuses (a stand-in for any unsafe or unreadable artefact)."""

        def save(self, directory):
            super().save(directory)
            (Path(directory) / "extra.pkl").write_bytes(b"\x80\x04N.")

    monkeypatch.setitem(candidates.RECOMMENDER_PATHS, "pickler", "tests.training.test_runs:Pickler")
    monkeypatch.setitem(candidates.CANDIDATE_SPECS, "pickler", ("pickler", {}))
    monkeypatch.setitem(globals(), "Pickler", Pickler)
    with pytest.raises(artefacts.ArtefactError, match=r"only \.npz, \.json and \.keras"):
        training.run_training(candidates=["pickler"])

    failed = TrainingRun.objects.exclude(pk=serving.pk).get()
    assert failed.status == TrainingRun.Status.FAILED and failed.stage == "save"
    assert not failed.is_serving and not failed.has_artefact
    serving.refresh_from_db()
    assert serving.is_serving
    assert not list(Path(artefacts.model_dir()).glob(f"run-{failed.pk}*"))


def test_a_hundred_event_shop_trains_in_seconds_without_a_validation_set():
    # A hundred one-visit shoppers: nobody has a history before a cut and something new after it.
    data, features = make_shop(n_shoppers=100, n_items=20, seed=4, events_per_shopper=(1, 1), n_cold=0)
    write_shop(data, features)
    assert Event.objects.count() <= 100

    run = training.run_training()

    assert run.status == TrainingRun.Status.SUCCEEDED and run.is_serving
    assert run.chosen == "content"
    assert "Too little data to validate" in run.gate["reason"]
    assert run.validation_ndcg is None
    assert sum(run.stage_seconds.values()) < 10
    precompute = run_precompute()
    assert precompute.stats["model_run"] == run.pk
    assert StoredList.objects.filter(
        recommendation_set_id=precompute.recommendation_set_id, placement="for_you"
    ).count()


def test_new_products_reach_the_top_ten_of_matching_shoppers_one_per_list(shop):
    run = training.run_training(candidates=["content"])
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    fit = run.candidates["content"]["fit"]
    assert fit["chosen"]["cold_boost"] >= 1.0 and "cold_prior" in fit
    for pid in ("new-cat2", "new-cat2-b"):
        ProductProfile.objects.create(
            product_id=pid, name=f"item {pid}", category="cat2", brand="brand1", price=40, text="tea leaf"
        )
    run_precompute()

    active = RecommendationSet.objects.get(status="active")
    category_of = dict(ProductProfile.objects.values_list("product_id", "category"))
    fans = []
    for shopper, items in StoredList.objects.filter(recommendation_set=active, placement="for_you").values_list(
        "subject", "items"
    ):
        seen = [category_of[p] for p in Event.objects.filter(shopper=shopper).values_list("product_id", flat=True)]
        top = [pid for pid, _, _ in items[:10]]
        if seen.count("cat2") / len(seen) >= 0.5:
            fans.append(sum(pid in top for pid in ("new-cat2", "new-cat2-b")))
    assert len(fans) > 10
    # No events at all: its category, brand and price (and what new products of its age have sold) put it there,
    # and the lift takes one slot, not every new product of the category at once.
    assert sum(n > 0 for n in fans) >= len(fans) / 3
    assert max(fans) <= 1 or run.candidates["content"]["fit"]["chosen"]["cold_boost"] == 1.0


def test_the_test_stage_scores_no_model_twice_on_the_test_set(shop, monkeypatch):
    """A single chosen candidate keeps the test metrics its candidate row got (at 200,000 products one test scoring
    is tens of seconds); the run's test metrics are that row's."""
    calls: dict[tuple[int, int], int] = {}
    evaluate = training.metrics.evaluate

    def counted(recommender, evalset, *args, **kwargs):
        key = (id(recommender), id(evalset))
        calls[key] = calls.get(key, 0) + 1
        return evaluate(recommender, evalset, *args, **kwargs)

    monkeypatch.setattr(training.metrics, "evaluate", counted)
    run = training.run_training(candidates=FAST)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.chosen in FAST, "a single candidate chosen"
    assert calls and max(calls.values()) == 1, calls
    assert run.test_metrics == run.candidates[run.chosen]["test"]
