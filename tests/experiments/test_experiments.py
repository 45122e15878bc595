"""A/B/n experiments: bucketing, the variant stamped on clicks and conversions, the report's statistics, and the
admin's Start / Stop / Promote (permission-checked and logged). Real PostgreSQL and Redis."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from recommendations import serving, tracking
from recommendations.conf import rec_settings
from recommendations.experiments import operations
from recommendations.experiments import report as stats
from recommendations.experiments.assignment import Arm, assign, bucket_point, running_for
from recommendations.experiments.report import compare
from recommendations.models import Event, Experiment, ExperimentVariant, Placement, ProductProfile, TrainingRun
from recommendations.training import runs as training
from tests.engine.synthetic import make_shop
from tests.factories import staff_with, write_shop

pytestmark = pytest.mark.django_db

VISITOR = "0123456789abcdef0123456789abcdef"
Z = 1.959963984540054  # the 97.5th percentile of the standard normal


def running(placement: str = "for_you", shares=(0.7, 0.3), salt: str = "a" * 32, **fields) -> Experiment:
    """A running experiment with arms A, B, C... of these shares and a fixed salt (so the split is reproducible)."""
    experiment = Experiment.objects.create(
        name=fields.pop("name", "test"),
        placement=placement,
        status=fields.pop("status", Experiment.Status.RUNNING),
        salt=salt,
        started_at=fields.pop("started_at", timezone.now() - timedelta(days=1)),
        **fields,
    )
    for i, share in enumerate(shares):
        ExperimentVariant.objects.create(experiment=experiment, name="ABCDEFG"[i], share=share)
    return experiment


def shoppers(n: int) -> list[str]:
    return [f"v:{uuid.UUID(int=i).hex}" for i in range(n)]


# --- bucketing ---------------------------------------------------------------------------------------------------


def test_bucketing_is_stable_across_calls_cache_flushes_and_processes():
    experiment = running()
    people = shoppers(300)
    first = [assign("for_you", s) for s in people]
    assert all(isinstance(arm, Arm) and arm.experiment_id == experiment.pk for arm in first)
    assert {arm.name for arm in first} == {"A", "B"}
    assert [assign("for_you", s) for s in people] == first
    operations.flush()
    assert [assign("for_you", s) for s in people] == first

    # Another interpreter, with another hash seed: the point comes from sha256, not from Python's hash().
    script = (
        "import json, sys, django; django.setup()\n"
        "from recommendations.experiments.assignment import bucket_point\n"
        "people = json.loads(sys.stdin.read())\n"
        "print(json.dumps([bucket_point('a' * 32, s) for s in people]))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "shop.settings", "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(people),
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    points = json.loads(result.stdout)
    assert points == [bucket_point("a" * 32, s) for s in people]
    assert [("A" if p < 0.7 else "B") for p in points] == [arm.name for arm in first]


def test_a_new_salt_reshuffles_the_shoppers():
    experiment = running()
    people = shoppers(2000)
    before = [assign("for_you", s).name for s in people]
    experiment.salt = "b" * 32
    experiment.save()  # the signal flushes the cached experiments
    after = [assign("for_you", s).name for s in people]
    moved = sum(a != b for a, b in zip(before, after, strict=True)) / len(people)
    # Independent splits move 2 x 0.7 x 0.3 = 42 % of shoppers; the same split would move none.
    assert 0.37 < moved < 0.47


@pytest.mark.parametrize("shares", [(0.7, 0.3), (7, 3), (50, 30, 20)])
def test_shares_are_respected_within_tolerance_on_20000_shoppers(shares):
    running(shares=shares)
    people = shoppers(20_000)
    names = [assign("for_you", s).name for s in people]
    total = sum(shares)
    for i, share in enumerate(shares):
        observed = names.count("ABC"[i]) / len(people)
        assert observed == pytest.approx(share / total, abs=0.015)


def test_running_for_gives_the_arms_with_normalised_shares():
    experiment = running(shares=(3, 1))
    arms = running_for("for_you")
    assert [(a["name"], a["share"], a["upper"]) for a in arms] == [("A", 0.75, 0.75), ("B", 0.25, 1.0)]
    assert {a["experiment_id"] for a in arms} == {experiment.pk}
    assert {a["salt"] for a in arms} == {"a" * 32}
    assert running_for("similar") is None


def test_no_experiment_no_shopper_or_not_running_means_no_arm():
    assert assign("for_you", "v:someone") is None
    experiment = running()
    assert assign("for_you", "") is None
    assert assign("similar", "v:someone") is None
    assert assign("for_you", "v:someone") is not None
    operations.stop(experiment.pk)
    assert assign("for_you", "v:someone") is None  # flushed on save, no stale cache
    draft = running(status=Experiment.Status.DRAFT, name="draft")
    assert assign(draft.placement, "v:someone") is None


def test_the_cache_follows_variant_edits_and_deletes():
    experiment = running(shares=(1, 1))
    assert [a["share"] for a in running_for("for_you")] == [0.5, 0.5]
    ExperimentVariant.objects.filter(experiment=experiment, name="B").update(share=3)  # no signal: stays cached
    assert [a["share"] for a in running_for("for_you")] == [0.5, 0.5]
    variant = experiment.variants.get(name="B")
    variant.save()
    assert [a["share"] for a in running_for("for_you")] == [0.25, 0.75]
    experiment.delete()
    assert running_for("for_you") is None


def test_the_arm_carries_what_serving_needs():
    run = TrainingRun.objects.create(status=TrainingRun.Status.SUCCEEDED, artefact_path="x", artefact_sha256="y")
    experiment = running(shares=(1,))
    ExperimentVariant.objects.create(
        experiment=experiment, name="v2", share=1, strategy=ExperimentVariant.Strategy.MODEL_VERSION, training_run=run
    )
    arms = {assign("for_you", s) for s in shoppers(200)}
    assert arms == {
        Arm(experiment.pk, "A", "model", None),
        Arm(experiment.pk, "v2", "model_version", run.pk),
    }
    assert Arm(experiment.pk, "v2", "model_version", run.pk).stamp == f"{experiment.pk}:v2"


# --- the variant on impressions, clicks and conversions -------------------------------------------------------------


@pytest.fixture
def browser(client):
    client.cookies[settings.RECOMMENDATIONS.get("VISITOR_COOKIE_NAME", "rec_vid")] = VISITOR
    ProductProfile.objects.bulk_create(ProductProfile(product_id=pid, name=pid) for pid in ("p1", "p2"))
    return client


def ingest(client, events):
    response = client.post(
        reverse("recommendations:ingest"), data=json.dumps({"events": events}), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_the_impression_takes_the_blocks_variant():
    request = RequestFactory().get("/")
    setattr(request, tracking.VISITOR_ATTR, VISITOR)
    block = serving.Block("for_you", items=[serving.Recommendation("p1", 1.0, "trending")])
    block.variant = "7:B"  # what serving stamps on a block served by an arm
    tracking.queue_impression(request, block)
    assert tracking.flush_impressions(request) == 1
    stored = Event.objects.get(event_type="impression")
    assert (stored.variant, stored.recommendation_id) == ("7:B", block.recommendation_id)


def test_click_and_conversions_get_the_impressions_variant_through_the_ingest_api(browser):
    Event.objects.create(
        event_id="imp-1",
        event_type="impression",
        visitor_id=VISITOR,
        shopper=f"v:{VISITOR}",
        placement="for_you",
        recommendation_id="rec-1",
        variant="7:B",
        context={"items": ["p1", "p2"]},
    )
    ingest(
        browser,
        [
            # The client's own "variant" is ignored: the arm comes from the impression.
            {"event_type": "click", "product_id": "p1", "placement": "for_you", "recommendation_id": "rec-1",
             "variant": "7:A", "event_id": "click-1"},
            {"event_type": "click", "product_id": "p2", "placement": "for_you", "recommendation_id": "unknown",
             "variant": "7:A", "event_id": "click-2"},
        ],
    )  # fmt: skip
    assert dict(Event.objects.filter(event_type="click").values_list("event_id", "variant")) == {
        "click-1": "7:B",
        "click-2": "",
    }

    ingest(
        browser,
        [
            {"event_type": "add_to_cart", "product_id": "p1", "event_id": "cart-1"},
            {"event_type": "purchase", "product_id": "p1", "value": "9.50", "context": {"order_id": "o1"},
             "event_id": "buy-1"},
            {"event_type": "purchase", "product_id": "p2", "event_id": "buy-2", "variant": "7:B"},
        ],
    )  # fmt: skip
    rows = {
        r[0]: r[1:]
        for r in Event.objects.filter(event_type__in=("add_to_cart", "purchase")).values_list(
            "event_id", "recommendation_id", "placement", "variant"
        )
    }
    assert rows["cart-1"] == ("rec-1", "for_you", "7:B")
    assert rows["buy-1"] == ("rec-1", "for_you", "7:B")
    # p2's click named a block no impression is known for: attributed to it, but to no arm.
    assert rows["buy-2"] == ("unknown", "for_you", "")


def test_attribute_reads_the_impressions_of_a_batch_in_one_query(django_assert_num_queries):
    for i in range(3):
        Event.objects.create(
            event_id=f"imp-{i}", event_type="impression", shopper="v:x", visitor_id="x",
            recommendation_id=f"rec-{i}", variant=f"1:{'AB'[i % 2]}",
        )  # fmt: skip
    clicks = [
        tracking.build_event("click", visitor_id="x", product_id="p", placement="for_you", recommendation_id=f"rec-{i}")
        for i in range(3)
    ]
    with django_assert_num_queries(1):
        tracking.attribute(clicks)
    assert [c.variant for c in clicks] == ["1:A", "1:B", "1:A"]


# --- the report --------------------------------------------------------------------------------------------------


def bulk(experiment: Experiment, name: str, event_type: str, n: int, **fields) -> None:
    when = fields.pop("occurred_at", experiment.started_at + timedelta(hours=1))
    Event.objects.bulk_create(
        Event(
            event_id=uuid.uuid4().hex,
            event_type=event_type,
            visitor_id=f"s{i}",
            shopper=f"v:s{i}",
            product_id="p1",
            placement=experiment.placement,
            variant=f"{experiment.pk}:{name}",
            occurred_at=when,
            **{"recommendation_id": f"rec-{name}-{i}", **fields},
        )
        for i in range(n)
    )


def test_the_report_on_known_counts():
    # `bulk` gives event i to shopper s<i>, so here every shopper saw one block: the per-shopper click counts equal
    # the per-block ones, and the by-hand figures below hold for both.
    experiment = running(shares=(1, 1))
    bulk(experiment, "A", "impression", 1000)
    bulk(experiment, "A", "click", 50)
    bulk(experiment, "A", "purchase", 10, value=Decimal("10.00"))
    bulk(experiment, "B", "impression", 1000)
    bulk(experiment, "B", "click", 80)
    bulk(experiment, "B", "add_to_cart", 30)
    bulk(experiment, "B", "purchase", 20, value=Decimal("5.00"))
    # Two lines of one order count once; an unattributed purchase, an earlier run's and another arm's do not count.
    # The order o-1 is shopper s0's second: 21 orders, but 20 shoppers who ordered.
    bulk(experiment, "B", "purchase", 1, value=Decimal("1.00"), context={"order_id": "o-1"})
    bulk(experiment, "B", "purchase", 1, value=Decimal("2.00"), context={"order_id": "o-1"})
    bulk(experiment, "B", "purchase", 5, recommendation_id="")
    bulk(experiment, "B", "click", 99, occurred_at=experiment.started_at - timedelta(minutes=1))
    bulk(experiment, "C", "click", 99)

    report = stats.report(experiment)

    control, b = report.arms
    assert (control.name, control.is_control, b.is_control) == ("A", True, False)
    assert (control.impressions, control.clicks, control.orders, control.revenue) == (1000, 50, 10, Decimal("100"))
    assert (b.impressions, b.clicks, b.add_to_carts, b.orders, b.revenue) == (1000, 80, 30, 21, Decimal("103"))
    assert (control.shoppers, control.clickers, control.buyers) == (1000, 50, 10)
    assert (b.shoppers, b.clickers, b.buyers) == (1000, 80, 20)
    assert (control.ctr, b.ctr) == (control.click_rate, b.click_rate) == (0.05, 0.08)
    assert (control.conversion, b.conversion) == (0.01, 0.02)
    assert (control.revenue_per_shopper, b.revenue_per_shopper) == (Decimal("0.10"), Decimal("0.10"))
    assert control.share == b.share == 0.5

    # By hand: difference 0.08 - 0.05 = 0.03; standard error sqrt(0.05 x 0.95 / 1000 + 0.08 x 0.92 / 1000)
    # = sqrt(0.0000475 + 0.0000736) = sqrt(0.0001211) = 0.0110045; interval 0.03 +- 1.96 x 0.0110045.
    clicked = b.click_rate_vs_control
    se = math.sqrt(0.0001211)
    assert se == pytest.approx(0.0110045, abs=1e-7)
    assert clicked.difference == pytest.approx(0.03)
    assert (clicked.low, clicked.high) == (pytest.approx(0.03 - Z * se), pytest.approx(0.03 + Z * se))
    assert (clicked.low, clicked.high) == (pytest.approx(0.008432, abs=1e-6), pytest.approx(0.051568, abs=1e-6))
    assert clicked.significant
    # z = 0.03 / 0.0110045 = 2.726; two-sided p = 0.0064.
    assert clicked.p_value == pytest.approx(0.0064, abs=1e-4)
    # Relative lift 0.08 / 0.05 - 1 = 0.6; delta method: Var = 0.0000736 / 0.05^2 + 0.08^2 x 0.0000475 / 0.05^4
    # = 0.02944 + 0.04864 = 0.07808, SE 0.279428; interval 0.6 +- 1.96 x 0.279428 = 0.052332 to 1.147668.
    assert clicked.lift == pytest.approx(0.6)
    assert (clicked.lift_low, clicked.lift_high) == (
        pytest.approx(0.052332, abs=1e-6),
        pytest.approx(1.147668, abs=1e-6),
    )

    # Conversion per shopper: 20 vs 10 of 1000 shoppers ordered; SE sqrt(0.01 x 0.99 / 1000 + 0.02 x 0.98 / 1000)
    # = sqrt(0.0000099 + 0.0000196) = sqrt(0.0000295) = 0.0054314, interval 0.01 +- 1.96 x 0.0054314 = -0.000645 to
    # 0.020645: not significant. (Per block, 21 orders per 1000 blocks gave 0.000183 to 0.021817, significant: the
    # second order of one shopper was counted as a second trial's success.)
    conversion = b.conversion_vs_control
    se = math.sqrt(0.01 * 0.99 / 1000 + 0.02 * 0.98 / 1000)
    assert se == pytest.approx(0.0054314, abs=1e-7)
    assert conversion.difference == pytest.approx(0.01)
    assert (conversion.low, conversion.high) == (pytest.approx(0.01 - Z * se), pytest.approx(0.01 + Z * se))
    assert (conversion.low, conversion.high) == (pytest.approx(-0.000645, abs=1e-6), pytest.approx(0.020645, abs=1e-6))
    assert not conversion.significant
    assert conversion.lift == pytest.approx(1.0)
    assert compare(10, 1000, 21, 1000).significant  # the per-block verdict it replaces


def test_the_wilson_interval_of_one_rate():
    # 50 / 1000, z^2 = 3.841459: centre (0.05 + 3.841459 / 2000) / 1.0038415 = 0.0517221; half-width
    # 1.959964 x sqrt(0.0000475 + 3.841459 / 4e6) / 1.0038415 = 1.959964 x 0.0069613 / 1.0038415 = 0.0135918.
    low, high = stats.wilson(50, 1000)
    assert (low, high) == (pytest.approx(0.0381303, abs=1e-6), pytest.approx(0.0653139, abs=1e-6))
    assert stats.wilson(0, 100)[0] == 0.0 and stats.wilson(0, 100)[1] > 0
    assert stats.wilson(0, 0) is None


def test_zero_counts_do_not_crash():
    assert compare(0, 0, 0, 0) == stats.Comparison()
    assert not compare(0, 0, 5, 10).significant
    nothing = compare(0, 100, 0, 100)  # nobody clicked anywhere
    assert (nothing.difference, nothing.low, nothing.high, nothing.lift, nothing.p_value) == (0, 0, 0, None, None)
    assert not nothing.significant
    from_zero = compare(0, 100, 5, 100)  # the control never clicked: no relative lift, the difference still has a CI
    assert from_zero.lift is None and from_zero.difference == pytest.approx(0.05) and from_zero.low < 0.05
    to_zero = compare(10, 1000, 0, 1000)  # the arm never converted: -100 %, but no zero-width interval for it
    assert to_zero.lift == -1 and to_zero.lift_low is None and to_zero.lift_high is None
    assert to_zero.high < 0 and to_zero.significant
    all_of_them = compare(100, 100, 100, 100)
    assert all_of_them.difference == 0 and not all_of_them.significant
    more_orders_than_blocks = compare(3, 2, 1, 2)
    assert more_orders_than_blocks.difference == pytest.approx(-1.0)

    experiment = running(shares=(1, 1, 1))
    report = stats.report(experiment)
    assert [(a.impressions, a.ctr, a.conversion) for a in report.arms] == [(0, None, None)] * 3
    assert report.arms[1].click_rate_vs_control == stats.Comparison()
    assert [(a.shoppers, a.click_rate, a.revenue_per_shopper) for a in report.arms] == [(0, None, None)] * 3
    draft = Experiment.objects.create(name="d", placement="for_you")
    assert stats.report(draft).arms == []


# --- the admin ---------------------------------------------------------------------------------------------------


def url(name: str, *args) -> str:
    return reverse(f"admin:recommendations_experiment_{name}", args=args)


def draft(placement: str = "for_you", variants=(("A", 1, "model"), ("B", 1, "trending")), **fields) -> Experiment:
    experiment = Experiment.objects.create(name=fields.pop("name", "draft"), placement=placement, **fields)
    for name, share, strategy in variants:
        ExperimentVariant.objects.create(experiment=experiment, name=name, share=share, strategy=strategy)
    return experiment


def form_data(placement="for_you", variants=(("A", "1", "model", ""), ("B", "1", "trending", ""))) -> dict:
    data = {
        "name": "Trending vs model",
        "placement": placement,
        "variants-TOTAL_FORMS": str(len(variants)),
        "variants-INITIAL_FORMS": "0",
        "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "1000",
    }
    for i, (name, share, strategy, run) in enumerate(variants):
        data.update(
            {
                f"variants-{i}-name": name,
                f"variants-{i}-share": share,
                f"variants-{i}-strategy": strategy,
                f"variants-{i}-training_run": run,
            }
        )
    return data


def test_an_experiment_is_added_with_its_arms(client):
    editor, _ = staff_with(client, "add_experiment", "change_experiment", "view_experiment", "add_experimentvariant")
    form = editor.get(reverse("admin:recommendations_experiment_add")).content.decode()
    assert '<option value="for_you">' in form and 'name="variants-1-share"' in form
    response = editor.post(reverse("admin:recommendations_experiment_add"), form_data())
    assert response.status_code == 302, response.content.decode()
    experiment = Experiment.objects.get()
    assert (experiment.status, experiment.salt, experiment.started_at) == ("draft", "", None)
    assert list(experiment.variants.values_list("name", "strategy")) == [("A", "model"), ("B", "trending")]
    listing = editor.get(reverse("admin:recommendations_experiment_changelist")).content.decode()
    assert "A 50%, B 50%" in listing
    page = editor.get(url("change", experiment.pk)).content.decode()
    assert "Not started yet" in page and url("start", experiment.pk) in page


@pytest.mark.parametrize(
    ("placement", "variants", "message"),
    [
        ("for_you", (("A", "1", "model", ""),), "at least two variants"),
        ("for_you", (("A", "1", "model", ""), ("A", "1", "trending", "")), "correct the duplicate data for name"),
        ("for_you", (("A", "1", "model", ""), ("a", "1", "trending", "")), "names must differ (ignoring case)"),
        ("for_you", (("A", "1", "model", ""), ("B", "0", "trending", "")), "the share must be more than 0"),
        ("for_you", (("A", "1", "model", ""), ("B", "1", "model_version", "")), "needs a training run"),
        ("for_you", (("A", "1", "model", ""), ("B b", "1", "trending", "")), "letters, digits"),
        ("nowhere", (("A", "1", "model", ""), ("B", "1", "trending", "")), "nowhere"),
    ],
)
def test_the_form_refuses_bad_experiments(client, placement, variants, message):
    editor, _ = staff_with(client, "add_experiment", "change_experiment", "view_experiment", "add_experimentvariant")
    response = editor.post(reverse("admin:recommendations_experiment_add"), form_data(placement, variants))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Experiment.objects.exists()


def test_a_model_version_needs_a_run_with_an_artefact(client):
    bare = TrainingRun.objects.create(status=TrainingRun.Status.FAILED)
    editor, _ = staff_with(client, "add_experiment", "change_experiment", "view_experiment", "add_experimentvariant")
    data = form_data(variants=(("A", "1", "model", ""), ("B", "1", "model_version", str(bare.pk))))
    response = editor.post(reverse("admin:recommendations_experiment_add"), data)
    assert response.status_code == 200 and not Experiment.objects.exists()
    # A run without a model is not even offered.
    assert "Select a valid choice" in response.content.decode()
    assert operations.variant_problems("B", 1, "model_version", bare) == [
        f"Variant “B”: training run #{bare.pk} has no model to serve."
    ]


def test_start_and_stop_need_the_change_permission(client):
    experiment = draft()
    viewer, _ = staff_with(client, "view_experiment")
    page = viewer.get(url("change", experiment.pk)).content.decode()
    assert url("start", experiment.pk) not in page
    assert viewer.post(url("start", experiment.pk)).status_code == 403
    experiment.refresh_from_db()
    assert experiment.status == "draft" and experiment.salt == ""
    experiment.status = Experiment.Status.RUNNING
    experiment.save()
    assert viewer.post(url("stop", experiment.pk)).status_code == 403
    variant = experiment.variants.get(name="B")
    assert viewer.post(url("promote", experiment.pk, variant.pk)).status_code == 403
    experiment.refresh_from_db()
    assert (experiment.status, experiment.winner_id) == ("running", None)
    assert not LogEntry.objects.exists()


def test_start_fixes_a_salt_and_stop_ends_it_both_logged(client):
    experiment = draft()
    editor, user = staff_with(client, "view_experiment", "change_experiment")
    assert editor.get(url("start", experiment.pk)).status_code == 405
    assert url("start", experiment.pk) in editor.get(url("change", experiment.pk)).content.decode()

    response = editor.post(url("start", experiment.pk), follow=True)

    assert "runs on for_you" in response.content.decode()
    experiment.refresh_from_db()
    assert experiment.status == "running" and len(experiment.salt) == 32 and experiment.started_at is not None
    assert assign("for_you", "v:someone").experiment_id == experiment.pk
    started = LogEntry.objects.get()
    assert (started.user_id, started.object_id, started.action_flag) == (user.pk, str(experiment.pk), CHANGE)
    assert "Started the experiment on for_you" in started.get_change_message()

    response = editor.post(url("stop", experiment.pk), follow=True)

    assert "stopped" in response.content.decode()
    experiment.refresh_from_db()
    assert experiment.status == "stopped" and experiment.stopped_at is not None
    assert assign("for_you", "v:someone") is None
    assert LogEntry.objects.count() == 2

    salt = experiment.salt
    editor.post(url("start", experiment.pk))
    experiment.refresh_from_db()
    assert experiment.status == "running" and experiment.salt != salt and experiment.stopped_at is None


def test_start_is_refused_with_the_reasons(client):
    editor, _ = staff_with(client, "view_experiment", "change_experiment")
    other = running(name="already on")
    lonely = draft(variants=(("A", 1, "model"),), name="lonely")
    clash = draft(name="clash")

    text = editor.post(url("start", lonely.pk), follow=True).content.decode()
    assert "was not started" in text and "at least two variants" in text
    text = editor.post(url("start", clash.pk), follow=True).content.decode()
    assert "“already on” already runs on for_you; stop it first." in text
    assert set(Experiment.objects.values_list("name", "status")) == {
        ("already on", "running"),
        ("lonely", "draft"),
        ("clash", "draft"),
    }
    assert not LogEntry.objects.exists()
    assert assign("for_you", "v:x").experiment_id == other.pk


def test_a_running_experiments_arms_and_placement_are_read_only(client):
    experiment = running()
    editor, _ = staff_with(client, "view_experiment", "change_experiment", "change_experimentvariant")
    page = editor.get(url("change", experiment.pk)).content.decode()
    assert 'name="variants-0-share"' not in page and 'name="placement"' not in page
    assert "Report" in page and "<svg" in page and "Promote this arm" in page
    assert "Promote the winner" not in page  # no data yet: an arm may be promoted by hand, but is no "winner"


def test_the_report_shows_on_the_change_page(client):
    experiment = running(shares=(1, 1))
    bulk(experiment, "A", "impression", 1000)
    bulk(experiment, "A", "click", 50)
    bulk(experiment, "B", "impression", 1000)
    bulk(experiment, "B", "click", 80)
    viewer, _ = staff_with(client, "view_experiment")

    page = viewer.get(url("change", experiment.pk)).content.decode()

    assert "5.00%" in page and "8.00%" in page  # click rates (and CTRs: one block per shopper here)
    assert "+3.00%" in page and "+0.84% to +5.16%" in page  # the difference and its interval
    assert "+60.00%" in page and "+5.23% to +114.77%" in page  # the relative lift and its interval
    assert 'class="num significant better"' in page
    assert "A shopper who sees fifty blocks counts once" in page and "independent trials" not in page
    assert "Promote the winner" not in page  # a viewer has no buttons
    assert "Shoppers who clicked, per variant" in page and 'class="whisker"' in page


def test_promoting_a_strategy_sets_the_placement_and_is_logged(client):
    experiment = running(shares=(1, 1))
    experiment.variants.filter(name="B").update(strategy=ExperimentVariant.Strategy.POPULAR)
    Placement.objects.filter(name="for_you").update(strategy=Placement.Strategy.MODEL)
    editor, user = staff_with(client, "view_experiment", "change_experiment")
    winner = experiment.variants.get(name="B")

    text = editor.post(url("promote", experiment.pk, winner.pk), follow=True).content.decode()

    assert "Promoted “B”: for_you now serves “Best sellers only”." in text
    assert Placement.objects.get(name="for_you").strategy == "popular"
    assert Placement.objects.get(name="for_you").updated_by == user.get_username()
    experiment.refresh_from_db()
    assert (experiment.status, experiment.winner_id) == ("stopped", winner.pk)
    assert experiment.stopped_at is not None
    assert assign("for_you", "v:x") is None
    entry = LogEntry.objects.get()
    assert entry.user_id == user.pk and "Promoted “B”" in entry.get_change_message()
    # With a winner it cannot start again.
    assert "cannot run again" in editor.post(url("start", experiment.pk), follow=True).content.decode()


def test_promoting_the_model_arm_puts_the_placement_back_on_the_model(client):
    experiment = running(placement="trending", shares=(1, 1))
    Placement.objects.filter(name="trending").update(strategy=Placement.Strategy.NEWEST)
    editor, _ = staff_with(client, "view_experiment", "change_experiment")
    editor.post(url("promote", experiment.pk, experiment.variants.get(name="A").pk))
    assert Placement.objects.get(name="trending").strategy == "model"


def test_promoting_creates_the_placement_row_from_the_settings_when_there_is_none(client):
    Placement.objects.filter(name="similar").delete()
    experiment = running(placement="similar", shares=(1, 1))
    experiment.variants.filter(name="B").update(strategy=ExperimentVariant.Strategy.NEWEST)
    editor, _ = staff_with(client, "view_experiment", "change_experiment")
    editor.post(url("promote", experiment.pk, experiment.variants.get(name="B").pk))
    row = Placement.objects.get(name="similar")
    config = rec_settings.PLACEMENTS["similar"]
    assert row.strategy == "newest"
    assert (row.size, row.fallback) == (config.get("size", row.size), list(config.get("fallback", [])))


def test_a_draft_has_no_winner_and_a_foreign_variant_is_refused(client):
    experiment = draft()
    other = running(placement="similar", name="other")
    editor, _ = staff_with(client, "view_experiment", "change_experiment")
    text = editor.post(url("promote", experiment.pk, experiment.variants.first().pk), follow=True).content.decode()
    assert "has not run yet" in text
    text = editor.post(url("promote", other.pk, experiment.variants.first().pk), follow=True).content.decode()
    assert "is not an arm of this experiment" in text
    assert not LogEntry.objects.exists()
    assert Experiment.objects.get(pk=other.pk).status == "running"


@pytest.fixture
def two_runs():
    data, features = make_shop(n_shoppers=200, n_items=80, seed=1)
    write_shop(data, features)
    first = training.run_training(candidates=["popularity"])
    second = training.run_training(candidates=["item_knn"])
    assert TrainingRun.objects.get(is_serving=True).pk == second.pk
    return first, second


def test_promoting_a_model_version_activates_its_run(client, two_runs, training_worker):
    first, _ = two_runs
    experiment = running(shares=(1,))
    ExperimentVariant.objects.create(
        experiment=experiment, name="old", share=1, strategy="model_version", training_run=first
    )
    Placement.objects.filter(name="for_you").update(strategy=Placement.Strategy.TRENDING)
    editor, user = staff_with(client, "view_experiment", "change_experiment")

    text = training_worker.post(editor, url("promote", experiment.pk, experiment.variants.get(name="old").pk))

    assert f"activation of training run #{first.pk} started on a training worker (task " in text.content.decode()
    assert not TrainingRun.objects.get(pk=first.pk).is_serving, "the web request loads no model"
    [result] = training_worker.run()
    assert result["state"] == "activated"
    first.refresh_from_db()
    assert first.is_serving and first.activated_by == user.get_username()
    assert Placement.objects.get(name="for_you").strategy == "model"
    assert Experiment.objects.get(pk=experiment.pk).winner.name == "old"


def test_a_model_version_whose_artefact_fails_is_promoted_but_refused_on_its_run(client, two_runs, training_worker):
    first, second = two_runs
    victim = sorted(Path(first.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    experiment = running(shares=(1,))
    variant = ExperimentVariant.objects.create(
        experiment=experiment, name="old", share=1, strategy="model_version", training_run=first
    )
    editor, _ = staff_with(client, "view_experiment", "change_experiment")

    text = training_worker.post(editor, url("promote", experiment.pk, variant.pk)).content.decode()
    assert f"activation of training run #{first.pk} started" in text
    [result] = training_worker.run()

    # The check runs in the worker, after the promotion was saved: the run records the refusal and its reason.
    assert result["state"] == "refused" and "hash check" in result["reason"]
    assert TrainingRun.objects.get(is_serving=True).pk == second.pk
    first.refresh_from_db()
    assert first.gate["activation"]["state"] == "refused" and "hash check" in first.gate["activation"]["reason"]
    assert not LogEntry.objects.filter(object_id=str(first.pk), content_type__model="trainingrun").exists()


def test_a_model_version_without_a_model_is_not_promoted(client, two_runs, training_worker):
    first, second = two_runs
    TrainingRun.objects.filter(pk=first.pk).update(artefact_path="", artefact_sha256="")
    experiment = running(shares=(1,))
    variant = ExperimentVariant.objects.create(
        experiment=experiment, name="old", share=1, strategy="model_version", training_run=first
    )
    editor, _ = staff_with(client, "view_experiment", "change_experiment")

    text = training_worker.post(editor, url("promote", experiment.pk, variant.pk)).content.decode()

    assert "Nothing was promoted" in text and f"Training run #{first.pk} was not activated" in text
    assert training_worker.sent == []
    assert TrainingRun.objects.get(is_serving=True).pk == second.pk
    experiment.refresh_from_db()
    assert (experiment.status, experiment.winner_id) == ("running", None)
    assert not LogEntry.objects.exists()
