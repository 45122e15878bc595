"""The whole retrain's time budget (RETRAIN_SECONDS): the deep candidates fit last and share what is left."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from recommendations.engine.split import temporal_split
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop


def test_a_deep_candidate_gets_its_share_of_what_is_left_within_its_own_bounds():
    # 100 s left, 20 s kept back for blend and test, two deep candidates to go: 40 s each, under their own 60.
    assert training.deep_budget(100.0, 20.0, 2, 60.0) == 40.0
    assert training.deep_budget(500.0, 20.0, 1, 60.0) == 60.0  # never more than its own max_seconds
    assert training.deep_budget(-30.0, 20.0, 1, 60.0) == training.MIN_DEEP_SECONDS  # late: the minimum
    assert training.deep_budget(-30.0, 20.0, 1, 5.0) == 5.0  # a smaller own budget is kept


@pytest.mark.parametrize(("seconds_left", "expected"), [(10_000.0, 60.0), (-1.0, training.MIN_DEEP_SECONDS)])
def test_the_neural_candidate_fits_after_the_others_with_the_budget_the_deadline_leaves(seconds_left, expected):
    data, features = make_shop(n_shoppers=120, n_items=40, seed=3)
    split = temporal_split(data, features, mode="per_shopper")
    stages: list[str] = []
    with override_settings(RECOMMENDATIONS={"NEURAL": {"epochs": 1}}):
        results = training.fit_candidates(
            split, features, ["neural", "popularity"], on_stage=stages.append, deadline=time.monotonic() + seconds_left
        )
    assert stages == ["fit popularity", "fit neural"]
    assert list(results) == ["neural", "popularity"]  # reported in the order asked
    assert results["neural"].validation, results["neural"].fit
    assert results["neural"].recommender.config["max_seconds"] == expected == results["neural"].fit["max_seconds"]


def test_a_run_whose_deep_candidate_got_less_than_its_own_budget_says_so():
    data, features = make_shop(n_shoppers=120, n_items=40, seed=3)
    split = temporal_split(data, features, mode="per_shopper")
    with override_settings(RECOMMENDATIONS={"NEURAL": {"epochs": 1}}):
        late = training.fit_candidates(split, features, ["popularity", "neural"], deadline=time.monotonic() - 1)
    warnings = training._evaluation_warnings(split, late)
    short = [w for w in warnings if w["code"] == "short_budget"]
    assert short == [{"code": "short_budget", "candidate": "neural", "seconds": training.MIN_DEEP_SECONDS, "own": 60.0}]
    line = next(line for line in training.warning_lines({"warnings": warnings}) if "RETRAIN_SECONDS" in line)
    assert line.startswith("neural trained for 15.0 s of its 60.0 s")
    # Without a deadline nothing was cut, and nothing is said.
    with override_settings(RECOMMENDATIONS={"NEURAL": {"epochs": 1}}):
        free = training.fit_candidates(split, features, ["neural"])
    assert not [w for w in training._evaluation_warnings(split, free) if w["code"] == "short_budget"]
