"""Flows in experiments: an Experiment on email:<slug> splits the flow's shoppers between its arms, each e-mail (and
each row) records its arm, clicks and orders land in the experiment's report per arm; a hold-out arm is composed but
not sent, so the purchase rate of its shoppers is the baseline of the lift."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from recommendations import tracking
from recommendations.experiments import assignment, operations
from recommendations.experiments import report as stats
from recommendations.models import Event, Experiment, ExperimentVariant, Flow, Message
from recommendations.push import analytics as flow_analytics
from recommendations.push.consent import set_email_consent
from recommendations.push.sending import preview, send_due_messages
from tests.factories import make_user
from tests.push.conftest import SITE

pytestmark = pytest.mark.django_db

CLICK_PATH = re.compile(re.escape(SITE) + r"(/e/c/[^/\"<>\s]+/)")


def experiment_on(placement: str, *arms: tuple[str, str]) -> Experiment:
    experiment = Experiment.objects.create(name="Flow test", placement=placement)
    for name, strategy in arms:
        ExperimentVariant.objects.create(experiment=experiment, name=name, share=0.5, strategy=strategy)
    return experiment


def start_with(experiment: Experiment, first: str, second: str) -> Experiment:
    """Start it, then fix a salt that puts shopper `first` in the first arm and `second` in the second (the hash
    decides arms; a test must know whose is whose)."""
    operations.start(experiment.pk)
    salt = next(
        s
        for s in (f"salt-{i}" for i in range(1000))
        if assignment.bucket_point(s, f"u:{first}") < 0.5 <= assignment.bucket_point(s, f"u:{second}")
    )
    Experiment.objects.filter(pk=experiment.pk).update(salt=salt)
    operations.flush()
    experiment.refresh_from_db()
    return experiment


def test_an_experiment_on_a_flow_splits_its_shoppers_and_the_report_counts_each_arm(smtp, push_shop, weekly):
    Flow.objects.filter(pk=weekly.pk).update(min_good_items=0)  # the best-sellers arm has no products of their own
    set_email_consent(push_shop.users["cy"].pk, False)  # only ann and bob, one in each arm
    ann, bob = str(push_shop.users["ann"].pk), str(push_shop.users["bob"].pk)
    experiment = start_with(
        experiment_on(
            "email:weekly", ("A", ExperimentVariant.Strategy.MODEL), ("B", ExperimentVariant.Strategy.POPULAR)
        ),
        ann,
        bob,
    )
    stamp_a, stamp_b = (assignment.stamp_of(experiment.pk, name) for name in ("A", "B"))

    send_due_messages()

    rows = {m.user_id: m for m in Message.objects.filter(status=Message.Status.SENT)}
    assert (rows[ann].variant, rows[bob].variant) == (stamp_a, stamp_b)
    assert rows[ann].products == [push_shop.pid(n) for n in ("Kite", "Yo-yo", "Ball", "Drum")]  # A: her own list
    assert rows[bob].products[0] == push_shop.pid("Pot")  # B: best sellers only (Pot sells most)
    impressions = Event.objects.filter(event_type="impression", placement="email:weekly")
    assert {(e.user_id, e.variant) for e in impressions} == {(ann, stamp_a), (bob, stamp_b)}

    # A click in each arm, from each e-mail; ann then adds the product to her cart: credited to arm A.
    for address in ("ann@example.com", "bob@example.com"):
        (mail,) = smtp.to(address)
        assert Client().get(CLICK_PATH.findall(mail.html)[0]).status_code == 302
    kite = push_shop.pid("Kite")
    assert tracking.record_event(None, "add_to_cart", user_id=ann, product_id=kite).variant == stamp_a
    tracking.record_event(None, "purchase", user_id=ann, product_id=kite, value=10, context={"order_id": "o-1"})

    result = stats.report(experiment)
    by_arm = {arm.name: arm for arm in result.arms}
    counts = {
        name: (a.impressions, a.clicks, a.shoppers, a.clickers, a.add_to_carts, a.orders) for name, a in by_arm.items()
    }
    assert counts == {"A": (1, 1, 1, 1, 1, 1), "B": (1, 1, 1, 1, 0, 0)}
    arms = {arm.name: arm for arm in flow_analytics.arms(experiment)}
    assert {n: (a.shoppers, a.sent, a.clickers, a.orders) for n, a in arms.items()} == {
        "A": (1, 1, 1, 1),
        "B": (1, 1, 1, 0),
    }

    # The experiment admin offers the flow's placement, and the flow's analytics show the arms.
    staff = make_user("boss", is_staff=True, is_superuser=True)
    admin = Client()
    admin.force_login(staff)
    form = admin.get(reverse("admin:recommendations_experiment_add")).content.decode()
    assert '<option value="email:weekly">' in form
    page = admin.get(reverse("admin:recommendations_flow_analytics", args=[weekly.pk])).content.decode()
    arms_table = re.search(r'<table id="rec-flow-arms">.*?</table>', page, re.S).group(0)
    assert re.findall(r'<th scope="row">([^<(]+)', arms_table) == ["A ", "B"]


def test_a_holdout_arm_is_composed_not_sent_and_is_the_baseline_of_the_lift(smtp, push_shop, weekly):
    ann, bob = str(push_shop.users["ann"].pk), str(push_shop.users["bob"].pk)
    experiment = start_with(
        experiment_on(
            "email:weekly", ("send", ExperimentVariant.Strategy.MODEL), ("hold", ExperimentVariant.Strategy.HOLDOUT)
        ),
        ann,
        bob,
    )
    assert any("hold-out arm" in note for note in preview(weekly, bob)["notes"])

    summary = send_due_messages()

    assert [r.to for r in smtp.received] == [["ann@example.com"]]
    assert summary["flows"]["weekly"]["skipped_holdout"] == 1 and summary["flows"]["weekly"]["sent"] == 1
    held = Message.objects.get(user_id=bob)
    assert (held.status, held.variant) == (Message.Status.SKIPPED_HOLDOUT, assignment.stamp_of(experiment.pk, "hold"))
    assert held.products == [push_shop.pid(n) for n in ("Tent", "Lamp", "Stove", "Rope")]  # what he would have got
    assert not Event.objects.filter(user_id=bob, event_type="impression").exists()
    # A second run in the period sends the held-out shopper nothing either: his key is spent.
    assert send_due_messages()["flows"]["weekly"]["already"] == 3  # ann, bob, and cy (skipped as weak)

    # Both buy something without clicking; bob's purchase came before his (held-out) e-mail, so it counts nothing.
    tracking.record_event(None, "purchase", user_id=ann, product_id=push_shop.pid("Pan"), value=5)
    before = held.created_at - timedelta(hours=1)
    tracking.record_event(None, "purchase", user_id=bob, product_id=push_shop.pid("Pan"), value=5, occurred_at=before)
    assert Event.objects.filter(event_type="purchase").count() == 2
    arms = {arm.name: arm for arm in flow_analytics.arms(experiment)}
    assert (arms["hold"].is_baseline, arms["send"].is_baseline) == (True, False)
    assert {n: (a.shoppers, a.sent, a.buyers) for n, a in arms.items()} == {"send": (1, 1, 1), "hold": (1, 0, 0)}
    assert arms["send"].vs_baseline.difference == 1.0 and not arms["send"].enough  # one shopper each: not read

    # Promoting the hold-out (sending nothing won) switches the flow off.
    operations.promote(experiment.pk, experiment.variants.get(name="hold").pk, by="boss")
    assert Flow.objects.get(pk=weekly.pk).enabled is False


def test_a_holdout_arm_is_refused_on_a_page_placement(push_shop):
    experiment = experiment_on(
        "for_you", ("A", ExperimentVariant.Strategy.MODEL), ("B", ExperimentVariant.Strategy.HOLDOUT)
    )
    with pytest.raises(operations.ExperimentError, match="only an e-mail flow's experiment can hold shoppers out"):
        operations.start(experiment.pk)
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.DRAFT
    assert "email:nope" not in operations.experiment_placements()
