"""The slot for new products in a retrain: chosen on validation, refit on every event, said in the command and on the
run's admin page, saved and loaded as an artefact, and a product added after training reaching precomputed lists.
Real PostgreSQL."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.urls import reverse

from recommendations.engine.coldslot import ColdSlot, cold_mask
from recommendations.engine.metrics import evaluate
from recommendations.engine.split import temporal_split
from recommendations.lists.precompute import run_precompute
from recommendations.models import ProductProfile, StoredList, TrainingRun
from recommendations.training import artefacts
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import T_END, write_shop


def planted():
    return make_shop(n_shoppers=600, n_items=90, seed=3, n_cold=8)


def test_trending_gets_a_slot_for_new_products_that_refits_saves_and_loads(tmp_path):
    data, features = planted()
    split = temporal_split(data, features, mode="global")
    results = training.fit_candidates(split, features, ["trending", "content"])
    trending = results["trending"]
    choice = training.Choice("trending", trending.recommender, trending.validation, ["trending"], [1.0])
    slotted = training.with_cold_slot(choice, results, split, features)
    note = slotted.notes[-1]
    assert note["rule"] == "cold_slot" and note["reason"] == "slot"
    assert slotted.name == "trending+new(content)" and slotted.cold_slot == {
        "scout": "content",
        "position": note["position"],
    }
    # Trending lists no new product; with the slot, validation's new products are reached at a bounded cost.
    assert trending.validation["cold_recall"] == 0 < slotted.validation["cold_recall"] == note["cold_recall"]
    assert note["cost"] <= 0.005 * trending.validation["ndcg"] + 1e-9
    assert evaluate(slotted.recommender, split.test)["cold_recall"] > 0
    assert training.choice_lines({"choice": slotted.notes})[-1].startswith(
        f"Slot {note['position']} of each list goes to the new product content ranks highest for the shopper"
    )

    # A recipe with a feature-reading model in it ranks new products itself: no search, no slot, and it says so.
    content = results["content"]
    own = training.Choice("content", content.recommender, content.validation, ["content"], [1.0])
    kept = training.with_cold_slot(own, results, split, features)
    assert kept is own and kept.cold_slot is None
    assert kept.notes[-1] == {"rule": "cold_slot", "reason": "recipe_ranks_new_products", "by": "content", "tried": []}
    assert training.choice_lines({"choice": kept.notes}) == [
        "No slot for new products: content, in the recipe, ranks them by their features itself."
    ]

    model = training.refit(slotted, results, data, features)
    assert isinstance(model, ColdSlot) and model.params["position"] == note["position"]
    # Refit on every event: only products without any event are new now.
    assert model.is_cold.tolist() == cold_mask(data).tolist()
    path, sha = artefacts.write_artefact(model, tmp_path / "run")
    loaded = artefacts.load_recommender(path, sha, features)
    history = data.select(np.arange(50))
    np.testing.assert_array_equal(loaded.score(history), model.score(history))


@pytest.mark.django_db
@pytest.mark.skipif(
    not django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="precompute: PostgreSQL only"
)
def test_a_product_added_after_the_retrain_reaches_shoppers_of_its_category_through_the_slot(
    settings, monkeypatch, staff_client
):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "SPLIT": "global"}
    # An extreme noise rule: the cheapest candidate (trending) serves, so content can only scout.
    monkeypatch.setattr(training, "NOISE_SE", 1e9)
    data, features = planted()
    write_shop(data, features)
    out = StringIO()
    call_command("train_recommender", "--no-progress", "--candidates", "trending,content", stdout=out)
    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.chosen == "trending+new(content)"
    note = next(n for n in run.data_stats["choice"] if n["rule"] == "cold_slot")
    line = next(line for line in out.getvalue().splitlines() if line.startswith("choice: Slot "))
    assert line.startswith(f"choice: Slot {note['position']} of each list goes to the new product content ranks")
    page = staff_client.get(reverse("admin:recommendations_trainingrun_change", args=[run.pk])).content.decode()
    assert line.removeprefix("choice: ").split(":")[0] in page

    # A product of the shop's biggest category arrives after the retrain, with no event yet.
    category = ProductProfile.objects.values_list("category", flat=True).order_by("product_id")[0]
    ProductProfile.objects.create(
        product_id="brand-new", name="Brand new", category=category, brand="", price=20, text="", created_at=T_END
    )
    precompute = run_precompute()
    reached = [
        subject
        for subject, items in StoredList.objects.filter(
            recommendation_set_id=precompute.recommendation_set_id, placement="for_you"
        ).values_list("subject", "items")
        if "brand-new" in [item[0] for item in items]
    ]
    assert reached, "the new product reached no for_you list"
    # At the slot of the list as stored, which keeps what a shopper only viewed (it leaves out purchases): the
    # lists above it hold products from the shopper's own history, and the slot still counts them.
    position = note["position"]
    lists = dict(
        StoredList.objects.filter(
            recommendation_set_id=precompute.recommendation_set_id, placement="for_you", subject__in=reached
        ).values_list("subject", "items")
    )
    places = {subject: [item[0] for item in items].index("brand-new") for subject, items in lists.items()}
    assert set(places.values()) == {position - 1}, places

    def own_history_above(subject: str) -> set[str]:
        code = int(subject.removeprefix("u:u:s"))
        history = {features.item_ids[i] for i in data.item[data.shopper == code]}
        return history & {item[0] for item in lists[subject][: position - 1]}

    assert any(own_history_above(s) for s in reached if s.startswith("u:u:s"))
    # Shoppers whose history is in its category, not shoppers at random.
    shopper_codes = [int(s.removeprefix("u:u:s")) for s in reached if s.startswith("u:u:s")]
    their_items = data.item[np.isin(data.shopper, shopper_codes)]
    in_category = [features.categories[features.category[i] - 1] == category for i in their_items]
    assert np.mean(in_category) > 1 / len(features.categories)
