"""A refused serving model costs only the for_you lists: the shared lists still refresh and the for_you ones are
carried over. Real PostgreSQL.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from recommendations.lists import serving_model
from recommendations.lists.precompute import run_precompute
from recommendations.models import Event, PrecomputeRun, ProductProfile, RecommendationSet, StoredList
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import T_END, write_shop

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"),
]


FAST = ["popularity", "item_knn"]


@pytest.fixture
def shop():
    data, features = make_shop(n_shoppers=200, n_items=80, seed=1)
    write_shop(data, features)
    return data, features


def lists_of(set_id: int, placement: str) -> dict[str, list]:
    return dict(
        StoredList.objects.filter(recommendation_set_id=set_id, placement=placement).values_list("subject", "items")
    )


def placements(set_id: int) -> set[str]:
    return set(StoredList.objects.filter(recommendation_set_id=set_id).values_list("placement", flat=True))


def test_a_refused_serving_model_still_refreshes_the_shared_lists_and_keeps_the_for_you_ones(
    shop, staff_client, caplog
):
    model_run = training.run_training(candidates=FAST)
    good = run_precompute()
    old_for_you = lists_of(good.recommendation_set_id, "for_you")
    old_trending = lists_of(good.recommendation_set_id, "trending")[""]
    assert old_for_you
    # A product nobody looked at becomes the shop's most viewed, after everything else.
    cold = ProductProfile.objects.exclude(product_id__in=[i[0] for i in old_trending]).values_list(
        "product_id", flat=True
    )[0]
    Event.objects.bulk_create(
        Event(event_id=f"hot{n}", event_type="view", shopper=f"v:hot{n}", product_id=cold, occurred_at=T_END)
        for n in range(60)
    )
    victim = sorted(Path(model_run.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated
    serving_model.forget()
    caplog.set_level(logging.ERROR)

    run = run_precompute()

    assert run.status == PrecomputeRun.Status.SUCCEEDED, run.error
    new_set = run.recommendation_set
    assert new_set.pk != good.recommendation_set_id and new_set.status == RecommendationSet.Status.ACTIVE
    assert lists_of(new_set.pk, "trending")[""][0][0] == cold  # shared lists are new
    assert lists_of(new_set.pk, "for_you") == old_for_you  # for_you lists are the old ones, all of them
    assert placements(new_set.pk) == placements(good.recommendation_set_id)
    refused = run.stats["model_refused"]
    assert refused["training_run"] == model_run.pk and refused["kept_from_set"] == good.recommendation_set_id
    assert refused["for_you_lists"] == len(old_for_you) == run.stats["lists"]["for_you"]
    assert f"training run #{model_run.pk}) was refused" in run.error
    assert "was refused" in caplog.text
    assert "kept from set" in new_set.algorithm
    page = staff_client.get(reverse("admin:recommendations_precomputerun_change", args=[run.pk]))
    assert f"training run #{model_run.pk}) was refused" in page.content.decode()

    # The next run keeps them again, from the set this one made.
    again = run_precompute()
    assert again.stats["model_refused"]["kept_from_set"] == new_set.pk
    assert lists_of(again.recommendation_set_id, "for_you") == old_for_you
