"""The precompute writes the lists of a for_you experiment's model-version arm ("for_you@run<id>") for that arm's
shoppers only, serving reads them, a refused artefact is skipped without failing the run, and the near-real-time
refresh keeps the arm's list as fresh as the control's. Real PostgreSQL, Redis and trained models."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from recommendations import experiments, serving
from recommendations.conf import rec_settings
from recommendations.experiments import operations
from recommendations.lists import refresh, serving_model
from recommendations.lists.precompute import finish_sharded, run_precompute, run_shard
from recommendations.models import Event, RecommendationSet, StoredList
from recommendations.training import runs as training
from tests.factories import T_END, model_version_experiment, serving_and_candidate_runs

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs():
    """A (popularity) serves and B (item_knn) does not: B wins the gate, then staff roll back to A."""
    return serving_and_candidate_runs(n_shoppers=200, n_items=80, seed=1)


@pytest.fixture
def experiment(runs):
    """A running for_you experiment: control on the serving model, treatment on model version B."""
    return model_version_experiment(runs[1], salt="a" * 32)


def arm_of(shopper: str) -> str:
    arm = experiments.assign("for_you", shopper)
    assert arm is not None
    return arm.name


def lists_in(set_id: int, placement: str) -> dict[str, list]:
    return dict(
        StoredList.objects.filter(recommendation_set_id=set_id, placement=placement).values_list("subject", "items")
    )


def ids(block: serving.Block) -> list[str]:
    return [item.product_id for item in block.items]


def test_the_treatment_arm_gets_model_bs_lists_and_only_its_shoppers_do(runs, experiment):
    a, b = runs
    placement = f"for_you@run{b.pk}"

    run = run_precompute()

    assert run.status == "succeeded" and run.stats["model_run"] == a.pk
    got = lists_in(run.recommendation_set_id, placement)
    served = lists_in(run.recommendation_set_id, "for_you")
    treatment = {s for s in served if arm_of(s) == "treatment"}
    assert 60 < len(treatment) < 140, "about half of the 200 shoppers"
    assert set(got) == treatment, "every treatment shopper, and nobody else"
    assert run.stats["lists"][placement] == len(got)
    assert run.stats["experiment_lists"] == {
        "experiment": experiment.pk,
        "runs": {str(b.pk): {"shoppers": len(treatment), "lists": len(got)}},
        "skipped": {},
    }
    assert "experiment lists" in run.stats["seconds"]
    assert sum(got[s] != served[s] for s in treatment) > len(treatment) / 2, "B's lists are not A's"

    # What B writes for everyone once it serves itself (same events, same catalog) is what its arm got.
    training.activate(b.pk, by="test")
    as_serving = run_precompute()
    expected = lists_in(as_serving.recommendation_set_id, "for_you")
    assert got == {s: expected[s] for s in treatment}
    # Now the treatment arm's version serves: it reads "for_you" and no separate list is written.
    assert "experiment_lists" not in as_serving.stats
    assert not lists_in(as_serving.recommendation_set_id, placement)


def test_serving_gives_treatment_shoppers_bs_list_and_control_shoppers_the_serving_models(runs, experiment):
    _, b = runs
    run = run_precompute()
    stored_b = lists_in(run.recommendation_set_id, f"for_you@run{b.pk}")
    stored_a = lists_in(run.recommendation_set_id, "for_you")
    treated = sorted(stored_b)[0]
    control = next(s for s in sorted(stored_a) if arm_of(s) == "control")

    block = serving.recommend("for_you", shopper=treated)
    assert block.variant == f"{experiment.pk}:treatment"
    assert block.model == f"run #{b.pk}"
    assert len(block.items) == 8
    assert set(ids(block)) <= {pid for pid, _, _ in stored_b[treated]}

    other = serving.recommend("for_you", shopper=control)
    assert other.variant == f"{experiment.pk}:control"
    assert other.model == "serving model"
    assert set(ids(other)) <= {pid for pid, _, _ in stored_a[control]}

    # The same treatment shopper once the experiment stops: the serving model's list, which differs.
    operations.stop(experiment.pk)
    after = serving.recommend("for_you", shopper=treated)
    assert (after.variant, after.model) == ("", "serving model")
    assert set(ids(after)) <= {pid for pid, _, _ in stored_a[treated]}
    assert ids(after) != ids(block)


def test_a_corrupt_artefact_skips_the_arms_lists_and_serving_falls_back(runs, experiment, caplog):
    _, b = runs
    first = run_precompute()
    assert lists_in(first.recommendation_set_id, f"for_you@run{b.pk}")
    victim = sorted(Path(b.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    serving_model.forget()

    with caplog.at_level(logging.WARNING, logger="recommendations.lists.precompute"):
        run = run_precompute()

    assert run.status == "succeeded"
    assert RecommendationSet.objects.get(status="active").pk == run.recommendation_set_id
    assert not lists_in(run.recommendation_set_id, f"for_you@run{b.pk}")
    assert run.stats["experiment_lists"]["runs"] == {}
    assert "hash check" in run.stats["experiment_lists"]["skipped"][str(b.pk)]
    assert any(f"for_you@run{b.pk}" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    stored_a = lists_in(run.recommendation_set_id, "for_you")
    treated = next(s for s in sorted(stored_a) if arm_of(s) == "treatment")
    block = serving.recommend("for_you", shopper=treated)
    assert block.variant == f"{experiment.pk}:treatment"
    assert block.model == "serving model"
    assert ids(block) and set(ids(block)) <= {pid for pid, _, _ in stored_a[treated]}


def test_a_sharded_precompute_writes_the_same_arm_lists(runs, experiment):
    _, b = runs
    placement = f"for_you@run{b.pk}"
    whole = lists_in(run_precompute().recommendation_set_id, placement)

    run = run_precompute(shards=2)
    assert run.status == "running"
    for shard in (1, 0, 0):  # shard 0 redelivered: it rewrites its own for_you rows, not the arm's
        run_shard(run.pk, shard)
    finished = finish_sharded(run.pk)

    assert finished.status == "succeeded"
    assert whole and lists_in(finished.recommendation_set_id, placement) == whole
    assert finished.stats["lists"][placement] == len(whole)
    assert finished.stats["experiment_lists"]["runs"][str(b.pk)]["lists"] == len(whole)


def test_the_refresh_rescores_the_arms_list_of_a_treatment_shopper_only(runs, experiment):
    _, b = runs
    placement = f"for_you@run{b.pk}"
    set_id = run_precompute().recommendation_set_id
    stored = lists_in(set_id, placement)
    treated = sorted(stored)[0]
    top = stored[treated][0][0]
    Event.objects.create(
        event_id="bought-top", event_type="purchase", shopper=treated, product_id=top, occurred_at=T_END
    )

    assert refresh.refresh_shopper(treated) == rec_settings.TOP_N
    after = lists_in(set_id, placement)[treated]
    assert top not in {pid for pid, _, _ in after}, "what they just bought leaves the arm's list too"
    assert after == refresh.model_items(serving_model.load_run_model(b), treated, rec_settings.TOP_N)

    control = next(s for s in sorted(lists_in(set_id, "for_you")) if arm_of(s) == "control")
    refresh.refresh_shopper(control)
    assert control not in lists_in(set_id, placement)
