"""Choosing what serves: the split a run validates on (SPLIT="auto"), the noise rule, the small-sample rule, and
how the run, the command and the admin page say so."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from recommendations.engine.baselines import EASE, Popularity
from recommendations.engine.blend import Blend
from recommendations.engine.metrics import evaluate_paired, paired_difference
from recommendations.engine.split import MIN_EVAL_SHOPPERS, temporal_split
from recommendations.models import TrainingRun
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import write_synthetic_shop

FAST = ["popularity", "item_knn"]


def result(name: str, recommender, per_shopper: list[float]) -> training.CandidateResult:
    """A candidate as `choose` sees it after validation: its per-shopper NDCG@10 and their mean."""
    values = np.asarray(per_shopper, dtype=np.float64)
    return training.CandidateResult(name, recommender, {"ndcg": float(values.mean())}, {}, 0.0, per_shopper=values)


def test_a_richer_model_within_noise_of_a_cheaper_one_loses_to_it_and_wins_beyond_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.4, size=400)
    cheap = result("popularity", Popularity(), base.tolist())
    # EASE ahead on average, but by less than its paired standard error: noise, the cheaper model serves.
    noise = rng.normal(0, 0.05, size=400)
    close = base + noise - noise.mean() + 0.002
    lead, se = paired_difference(close, base)
    assert 0 < lead < se
    picked, notes = training.simplest_within_noise([result("ease", EASE(), close.tolist()), cheap])
    assert picked.name == "popularity"
    assert notes == [{"rule": "simpler_within_noise", "best": "ease", "lead": lead, "se": se}]
    # Ahead by several errors: it serves.
    far = base + rng.normal(0.03, 0.05, size=400)
    picked, notes = training.simplest_within_noise([result("ease", EASE(), far.tolist()), cheap])
    assert (picked.name, notes) == ("ease", [])


def test_a_blend_that_leads_by_less_than_its_paired_error_loses_to_the_single_model():
    rng = np.random.default_rng(1)
    single = rng.uniform(0, 0.4, size=600)
    rival = result("ease", EASE(), single.tolist())
    noise = rng.normal(0, 0.05, size=600)
    noisy = single + noise - noise.mean() + 0.001
    lead, se = paired_difference(noisy, single)
    assert 0 < lead < training.NOISE_SE * se
    verdict = training.blend_verdict("blend(ease+content)", noisy, [rival])
    assert verdict == {
        "rule": "blend_within_noise",
        "blend": "blend(ease+content)",
        "over": "ease",
        "lead": lead,
        "se": se,
    }
    clear = single + np.abs(rng.normal(0.02, 0.01, size=600))
    assert training.blend_verdict("blend(ease+content)", clear, [rival])["rule"] == "blend_leads"
    # It must lead every rival named: the chosen single model and the best one.
    best = result("neural", EASE(), (clear + 0.01).tolist())
    assert training.blend_verdict("blend(ease+content)", clear, [rival, best])["over"] == "neural"


def test_a_small_validation_set_never_chooses_a_blend():
    data, features = make_shop(n_shoppers=200, n_items=80, seed=1)
    split = temporal_split(data, features, mode="per_shopper")
    assert split.validation.n_shoppers < MIN_EVAL_SHOPPERS
    results = training.fit_candidates(split, features, ["popularity", "item_knn", "content"])
    choice = training.choose(results, split, blend=True)
    assert not choice.name.startswith("blend") and choice.components == [choice.name]
    assert {"rule": "no_blend_small_sample", "shoppers": split.validation.n_shoppers}.items() <= choice.notes[
        -1
    ].items()


def test_on_enough_shoppers_a_blend_serves_only_with_a_lead_beyond_its_paired_error():
    data, features = make_shop(n_shoppers=1000, n_items=100, seed=6)
    split = temporal_split(data, features, mode="per_shopper")
    assert split.validation.n_shoppers >= MIN_EVAL_SHOPPERS
    results = training.fit_candidates(split, features, ["popularity", "item_knn", "content"])
    choice = training.choose(results, split, blend=True)
    verdict = next(n for n in choice.notes if n["rule"].startswith("blend_"))
    single = results[verdict["over"]]
    if verdict["rule"] == "blend_leads":
        assert choice.name == verdict["blend"]
        blend = Blend([results[c].recommender for c in choice.components], choice.weights)
        lead, se = paired_difference(evaluate_paired(blend, split.validation)[1], single.per_shopper)
        assert lead > training.NOISE_SE * se
        assert (lead, se) == pytest.approx((verdict["lead"], verdict["se"]))
    else:
        assert choice.name in results and choice.components == [choice.name]
        assert verdict["lead"] <= training.NOISE_SE * verdict["se"]


@pytest.mark.django_db
def test_a_run_on_few_spanning_shoppers_validates_per_shopper_and_warns_in_the_command_and_the_admin(staff_client):
    write_synthetic_shop()
    out = StringIO()
    call_command("train_recommender", "--no-progress", "--candidates", ",".join(FAST), stdout=out)
    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    split = run.data_stats["split"]
    decision = split["decision"]
    assert (decision["setting"], decision["mode"], decision["reason"]) == ("auto", "per_shopper", "few_span")
    assert split["mode"] == "per_shopper" and decision["spanning_shoppers"] < MIN_EVAL_SHOPPERS
    assert run.data_stats["warnings"][0]["code"] == "small_sample"
    assert run.data_stats["warnings"][0]["shoppers"] == split["validation_shoppers"] < MIN_EVAL_SHOPPERS

    lines = out.getvalue().splitlines()
    split_line = next(line for line in lines if line.startswith("split: "))
    assert split_line == (
        f"split: per shopper (auto: only {decision['spanning_shoppers']} shoppers span the global cut, fewer than "
        f"{MIN_EVAL_SHOPPERS}); {split['validation_shoppers']} validation and {split['test_shoppers']} test shoppers"
    )
    warning = next(line for line in lines if line.startswith("warning: "))
    assert f"only {split['validation_shoppers']} validation shoppers (fewer than {MIN_EVAL_SHOPPERS})" in warning
    assert "too few to rank the candidates" in warning and "(paired standard error)" in warning

    page = staff_client.get(reverse("admin:recommendations_trainingrun_change", args=[run.pk])).content.decode()
    assert split_line.removeprefix("split: ") in page
    assert '<p class="errornote">Warning: only' in page


@pytest.mark.django_db
def test_a_run_with_split_set_to_global_says_so_and_a_large_set_carries_no_warning(settings):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SPLIT": "global"}
    write_synthetic_shop()
    run = training.run_training(candidates=FAST)
    assert run.data_stats["split"]["decision"]["reason"] == "setting"
    assert training.split_line(run.data_stats).startswith("global cut (set in SPLIT); ")
    stats = {**run.data_stats, "warnings": []}
    assert training.warning_lines(stats) == []
