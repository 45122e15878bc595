"""Issue 17, items 10 and 15: what staff and a new user see after `make demo`.

- the analytics page has the demo's history as soon as `generate_demo_data` has run;
- a pin on an out-of-stock or inactive product warns instead of reading "live" and never showing;
- the experiment report scrolls inside its own box instead of widening the page;
- a test with a handful of shoppers says "not enough data" and offers no "winner";
- set-up progress bars never run past their totals; `create_demo_logins` prints the address served.
"""

from __future__ import annotations

import io
import re
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recommendations import analytics, catalog, experiments
from recommendations.management.stage_bars import StageBars
from recommendations.models import Event, Experiment, ExperimentVariant, MerchandisingRule, PlacementDay, ProductProfile
from tests.factories import make_event, make_small_shop

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
NOW = "2024-06-01T12:00:00Z"
SMALL = ["--users", "40", "--products", "40", "--days", "20", "--now", NOW, "--seed", "3", "--no-progress"]


# -- 10 (a): the analytics are filled at set-up ---------------------------------------------------------------------


def test_generate_demo_data_fills_the_analytics_of_the_days_it_generated():
    out = io.StringIO()
    call_command("generate_demo_data", *SMALL, stdout=out)

    rows = PlacementDay.objects.all()
    assert rows.exists(), "the analytics page would be empty until someone pressed Refresh now"
    assert {"for_you", "trending", "similar"} <= set(rows.values_list("placement", flat=True))
    days = set(rows.values_list("day", flat=True))
    assert min(days) >= timezone.datetime(2024, 5, 12).date() and max(days) <= timezone.datetime(2024, 6, 1).date()
    assert len(days) > 10  # spread over the period, not one day
    # The rows are what a rebuild of the events says, not made up: the same sums as a fresh rollup.
    sums = rows.aggregate(i=Sum("impressions"), c=Sum("clicks"), a=Sum("add_to_carts"), o=Sum("orders"))
    assert sums["i"] == Event.objects.filter(event_type="impression").exclude(placement="").count() > 0
    assert sums["c"] == Event.objects.filter(event_type="click").exclude(placement="").count() > 0
    assert 0 < sums["o"] <= sums["a"] <= sums["c"] * 3
    assert "placement-day rows" in out.getvalue()
    _per_placement, grand = analytics.totals(min(days), max(days))
    assert grand.impressions == sums["i"] and grand.ctr is not None and 0 < grand.ctr < 1


def test_demo_conversions_are_attributed_only_to_a_click_before_them():
    call_command("generate_demo_data", *SMALL, stdout=io.StringIO())
    attributed = Event.objects.filter(event_type__in=("add_to_cart", "purchase")).exclude(recommendation_id="")
    assert attributed.exists()
    for event in attributed[:200]:
        click = Event.objects.filter(
            event_type="click",
            shopper=event.shopper,
            product_id=event.product_id,
            recommendation_id=event.recommendation_id,
            placement=event.placement,
            occurred_at__lte=event.occurred_at,
        )
        assert click.exists(), event
        impression = Event.objects.get(event_type="impression", recommendation_id=event.recommendation_id)
        assert event.product_id in impression.context["items"]
        assert event.context.get("attributed") == "click"


# -- 10 (b): a pin that can never show says so -------------------------------------------------------------------


def pin_form(product_id: str, name: str = "pin it") -> dict:
    return {
        "name": name,
        "active": "on",
        "priority": "0",
        "placements": [],
        "action": "pin",
        "target": "product",
        "target_value": product_id,
        "price_min": "",
        "price_max": "",
        "position": "1",
        "strength": "2",
        "starts_at_0": "",
        "starts_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
    }


def test_a_pin_on_an_out_of_stock_product_warns_on_save_in_the_list_and_in_the_preview(staff_client):
    shop = make_small_shop()
    sold_out, fine = shop["Shears"], shop["Pan"]
    sold_out.stock = 0
    sold_out.save()
    catalog.sync_products()  # what the host's save signal does once the transaction commits
    assert ProductProfile.objects.get(product_id=str(sold_out.pk)).in_stock is False

    response = staff_client.post(
        reverse("admin:recommendations_merchandisingrule_add"), pin_form(str(sold_out.pk)), follow=True
    )
    page = response.content.decode()
    assert response.status_code == 200 and MerchandisingRule.objects.filter(name="pin it").exists()
    assert "will not show" in page and "out of stock" in page and 'class="warning"' in page

    changelist = staff_client.get(reverse("admin:recommendations_merchandisingrule_changelist")).content.decode()
    assert "never shows" in changelist

    preview = staff_client.get(
        reverse("admin:recommendations_placement_preview"), {"placement": "for_you", "who": "anonymous"}
    ).content.decode()
    assert 'id="rec-preview-unshown-pins"' in preview and "out of stock" in preview

    # A pin on a product that can show is saved without a warning and reads plain "live".
    MerchandisingRule.objects.all().delete()
    response = staff_client.post(
        reverse("admin:recommendations_merchandisingrule_add"), pin_form(str(fine.pk), "fine pin"), follow=True
    )
    assert "will not show" not in response.content.decode()
    changelist = staff_client.get(reverse("admin:recommendations_merchandisingrule_changelist")).content.decode()
    assert "never shows" not in changelist and "live" in changelist


def test_a_pin_on_an_inactive_product_or_an_empty_category_is_flagged():
    from recommendations.admin.rules import pin_problem

    shop = make_small_shop()
    ProductProfile.objects.filter(product_id=str(shop["Pan"].pk)).update(active=False)
    Action, Target = MerchandisingRule.Action, MerchandisingRule.Target
    inactive = MerchandisingRule(name="x", action=Action.PIN, target=Target.PRODUCT, target_value=str(shop["Pan"].pk))
    assert "inactive" in pin_problem(inactive)
    category = MerchandisingRule(name="y", action=Action.PIN, target=Target.CATEGORY, target_value="garden")
    assert pin_problem(category) == ""
    ProductProfile.objects.filter(category="garden").update(in_stock=False)
    assert "garden" in pin_problem(category)
    boost = MerchandisingRule(name="z", action=Action.BOOST, target=Target.CATEGORY, target_value="garden")
    assert pin_problem(boost) == ""


# -- 10 (c) and (d): the experiment report --------------------------------------------------------------------


def running_experiment() -> Experiment:
    experiment = Experiment.objects.create(
        name="tiny",
        placement="for_you",
        status=Experiment.Status.RUNNING,
        salt="c" * 32,
        started_at=timezone.now() - timedelta(days=1),
    )
    for name in ("A", "B"):
        ExperimentVariant.objects.create(experiment=experiment, name=name, share=1)
    return experiment


def show(experiment: Experiment, arm: str, shopper: str, click: bool = False) -> None:
    rec_id = uuid.uuid4().hex
    at = experiment.started_at + timedelta(hours=1)
    fields = {"placement": "for_you", "recommendation_id": rec_id, "product_id": "p1"}
    make_event("impression", shopper, variant=f"{experiment.pk}:{arm}", occurred_at=at, **fields)
    if click:
        make_event("click", shopper, occurred_at=at + timedelta(seconds=5), **fields)


def report_page(client: Client, experiment: Experiment) -> str:
    return client.get(reverse("admin:recommendations_experiment_change", args=[experiment.pk])).content.decode()


def test_six_visitors_show_not_enough_data_and_no_winner_to_promote(staff_client):
    experiment = running_experiment()
    for i in range(3):
        show(experiment, "A", f"v:a{i}")
        show(experiment, "B", f"v:b{i}")

    control, b = experiments.report(experiment).arms
    assert (control.shoppers, b.shoppers) == (3, 3)
    assert not b.click_enough and not b.conversion_enough
    assert experiments.report(experiment).winner is None

    page = report_page(staff_client, experiment)
    assert page.count("not enough data") >= 2  # click rate and conversion against the control
    assert "+0.00% to +0.00%" not in page  # the zero-width interval it used to show
    assert "Promote the winner" not in page
    assert page.count("Promote this arm") == 2  # staff may still promote an arm by hand, under a plain label


def test_with_enough_shoppers_only_the_better_arm_is_offered_as_the_winner(staff_client):
    experiment = running_experiment()
    for i in range(200):
        show(experiment, "A", f"v:a{i}", click=i < 10)
        show(experiment, "B", f"v:b{i}", click=i < 40)

    result = experiments.report(experiment)
    b = result.arms[1]
    assert b.click_enough and b.click_rate_vs_control.significant
    assert result.winner is not None and result.winner.name == "B"

    page = report_page(staff_client, experiment)
    assert page.count("Promote the winner") == 1 and page.count("Promote this arm") == 1
    b_row = re.search(r"<tr[^>]*>\s*<td>B\b.*?</tr>", page, re.S).group(0)
    assert "Promote the winner" in b_row


def test_enough_data_needs_shoppers_in_each_arm_and_outcomes_on_both_sides():
    least = experiments.MIN_SHOPPERS_PER_ARM
    assert not experiments.enough_data(1, 3, 2, 3)
    assert not experiments.enough_data(10, least - 1, 10, 1000)
    assert not experiments.enough_data(0, 1000, 0, 1000)  # nobody clicked: no interval to speak of
    assert not experiments.enough_data(least, least, least, least)  # everybody clicked, likewise
    assert experiments.enough_data(10, 1000, 0, 1000)  # the arm never converted, the control did: readable
    assert experiments.enough_data(50, 1000, 80, 1000)


def test_the_report_tables_scroll_inside_their_own_box(staff_client):
    experiment = running_experiment()
    show(experiment, "A", "v:a")
    page = report_page(staff_client, experiment)
    css = re.search(r"\.rec-experiment \.rec-table-scroll \{([^}]*)\}", page)
    assert css and "overflow-x:auto" in css.group(1) and "max-width:100%" in css.group(1)
    for box in ("rec-experiment-arms", "rec-experiment-comparisons"):
        assert re.search(rf'<div class="rec-table-scroll" id="{box}">\s*<table>', page), box
    # Headers wrap: nothing forces the header row onto one 2,000 px line.
    assert not re.search(r"th\.num[^{]*\{[^}]*white-space:nowrap", page)


# -- 15: progress bars and the printed address ------------------------------------------------------------------


class RecordingBars(StageBars):
    """StageBars that checks, after every report, that no bar has run past its total."""

    def __init__(self) -> None:
        super().__init__(enabled=True)
        self.seen: list[tuple[str, int, int]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        super().__call__(stage, done, total)
        assert self.bar is not None
        self.seen.append((stage, self.bar.n, self.bar.total))
        assert self.bar.n <= self.bar.total, (stage, self.bar.n, self.bar.total)


def test_a_stage_bar_follows_a_total_learnt_late_and_never_runs_past_it():
    bars = RecordingBars()
    bars("fit item_knn", 0, 1)  # the run starts every stage as one step
    for done in range(0, 241, 40):
        bars("fit item_knn", done, 240)  # then the model reports its items
    bars("fit item_knn", 240, 240)
    assert bars.seen[-1] == ("fit item_knn", 240, 240)
    bars("fit neural", 0, 1)
    bars("fit neural", 3, 8)
    bars("fit neural", 9, 8)  # a stray report past the end is held at the total
    assert bars.seen[-1] == ("fit neural", 8, 8)
    bars.close()


OVERRUN = re.compile(r"(\d+)/(\d+) \[")
NO_TOTAL = re.compile(r"^(?P<stage>[a-z_ ]+?)\s*:\s+\d+ \[")  # tqdm's form once n passes the total


def test_train_recommender_bars_stay_within_their_totals(capsys):
    call_command("generate_demo_data", *SMALL, stdout=io.StringIO())
    capsys.readouterr()
    call_command("train_recommender", "--candidates", "popularity,item_knn,content", stdout=io.StringIO())
    lines = [line.strip() for line in re.split(r"[\r\n]+", capsys.readouterr().err) if line.strip()]
    bars = [line for line in lines if "|" in line or NO_TOTAL.match(line)]
    assert any(line.startswith("fit item_knn") for line in bars)
    for line in bars:
        assert not NO_TOTAL.match(line), f"a bar ran past its total: {line!r}"
        found = OVERRUN.search(line)
        assert found and int(found.group(1)) <= int(found.group(2)), line


def test_create_demo_logins_prints_the_address_it_is_given(settings, monkeypatch):
    settings.DEBUG = True
    make_small_shop()
    out = io.StringIO()
    call_command("create_demo_logins", "--site", "http://0.0.0.0:8123/", stdout=out)
    assert "The shop: http://0.0.0.0:8123/  The admin: http://0.0.0.0:8123/admin/" in out.getvalue()
    monkeypatch.setenv("DEMO_SITE_URL", "localhost:9000")
    out = io.StringIO()
    call_command("create_demo_logins", stdout=out)
    assert "The shop: http://localhost:9000/" in out.getvalue()
    with pytest.raises(CommandError, match="--site must be an http"):
        call_command("create_demo_logins", "--site", "ftp://x", stdout=io.StringIO())


def test_the_makefile_prints_the_address_it_serves():
    commands = subprocess.run(
        ["make", "-n", "demo-setup", "serve", "SERVE_ADDR=127.0.0.1:8123"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "create_demo_logins --site http://127.0.0.1:8123" in commands
    assert "runserver 127.0.0.1:8123" in commands
    default = subprocess.run(["make", "-n", "demo-setup", "serve"], cwd=ROOT, capture_output=True, text=True).stdout
    served = re.search(r"runserver (\S+)", default).group(1)
    assert f"create_demo_logins --site http://{served}" in default
