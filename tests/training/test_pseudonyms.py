"""Training knows shoppers by a keyed hash: never their ids, in memory, in artefacts or in the run's records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recommendations.models import Event, StoredList, TrainingRun
from recommendations.training import loading
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import recommendations_with, write_shop

pytestmark = pytest.mark.django_db

PSEUDONYM = re.compile(r"p:[0-9a-f]{32}")


@pytest.fixture
def shop():
    data, features = make_shop(n_shoppers=120, n_items=60, seed=3)
    write_shop(data, features)


def test_training_data_holds_pseudonyms_only_and_they_are_stable(shop):
    raw = set(Event.objects.values_list("shopper", flat=True))
    first = training.build_training_data()
    assert first.shoppers and all(PSEUDONYM.fullmatch(s) for s in first.shoppers)
    assert not raw & set(first.shoppers)
    assert set(first.shoppers) <= {loading.pseudonym(s) for s in raw}
    assert training.build_training_data().shoppers == first.shoppers  # runs agree on who is who


def test_another_key_gives_other_pseudonyms(shop, settings):
    before = loading.pseudonym("u:42")
    settings.RECOMMENDATIONS = recommendations_with(PSEUDONYM_KEY="another secret of enough length")
    assert loading.pseudonym("u:42") != before
    assert PSEUDONYM.fullmatch(loading.pseudonym("u:42"))


def test_no_shopper_id_reaches_the_artefact_or_the_run_and_lists_still_name_shoppers(shop):
    run = training.run_training(candidates=["popularity", "item_knn", "content"])
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    raw = sorted(set(Event.objects.values_list("shopper", flat=True)))
    blobs = [p.read_bytes() for p in Path(run.artefact_path).rglob("*") if p.is_file()]
    record = repr((run.data_stats, run.candidates, run.gate, run.message)).encode()
    for shopper in raw:
        key = shopper.encode()
        assert not any(key in blob for blob in blobs), shopper
        assert key not in record, shopper
    # Precompute maps back: the lists it writes from this model are keyed by the real shoppers.
    from recommendations.lists.precompute import run_precompute

    run_precompute()
    subjects = set(StoredList.objects.filter(placement="for_you").values_list("subject", flat=True))
    assert subjects and subjects <= set(raw)


@pytest.mark.parametrize("value", ["short", 42])
def test_a_weak_pseudonym_key_is_a_check_error(settings, value):
    from django.core.checks import run_checks

    settings.RECOMMENDATIONS = recommendations_with(PSEUDONYM_KEY=value)
    assert any("PSEUDONYM_KEY" in error.msg for error in run_checks() if error.id == "recommendations.E006")
