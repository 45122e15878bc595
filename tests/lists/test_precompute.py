"""The precompute run against the database: atomic set switch, failure handling, cleanup, sales counts,
the management command, the task and enqueue helper, the default schedule and the admin around them."""

from __future__ import annotations

import importlib
from datetime import timedelta
from io import StringIO

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from recommendations import catalog, serving, tracking
from recommendations.lists.precompute import STAGES, activate_set, run_precompute
from recommendations.models import PrecomputeRun, ProductProfile, RecommendationSet, StoredList
from recommendations.tasks import enqueue_precompute, precompute
from shop.celery import app as celery_app
from tests.factories import make_category, make_product, make_user

pytestmark = pytest.mark.django_db


def store(*events):
    tracking.store_events(tracking.build_event(t, visitor_id=v, product_id=p, **kw) for v, t, p, kw in events)


def ev(visitor, product, event_type="view", **kw):
    return (visitor, event_type, str(product.pk), kw)


@pytest.fixture
def shop():
    """Products A..D in two categories and shoppers who co-view A+B and C+D."""
    tools, toys = make_category(slug="tools"), make_category(slug="toys")
    products = {
        "A": make_product("Hammer", category=tools),
        "B": make_product("Nails", category=tools),
        "C": make_product("Kite", category=toys),
        "D": make_product("Yo-yo", category=toys),
    }
    catalog.sync_products()
    events = []
    for n in range(4):
        events += [ev(f"a{n}", products["A"]), ev(f"a{n}", products["B"])]
        events += [ev(f"c{n}", products["C"]), ev(f"c{n}", products["D"])]
    store(*events)
    return products


def bad_settings(**override):
    return override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, **override})


def test_a_run_writes_every_placement_and_activates_the_set(shop):
    run = run_precompute()
    assert run.status == PrecomputeRun.Status.SUCCEEDED
    assert run.progress == 1.0
    assert run.stage == "done"
    assert run.started_at and run.finished_at
    assert run.stats["events_used"] == 16
    assert run.stats["shoppers"] == 8
    assert run.stats["products"] == 4
    assert run.stats["lists"] == {"for_you": 8, "similar": 4, "trending": 3}
    assert set(run.stats["seconds"]) == set(STAGES)
    assert run.recommendation_set.status == RecommendationSet.Status.ACTIVE
    assert serving.active_set_id() == run.recommendation_set_id
    a, b = str(shop["A"].pk), str(shop["B"].pk)
    assert serving.stored_items("similar", a)[0][:1] == [b]
    assert serving.stored_items("for_you", "v:a0")[0][2] in {f"because:{a}", f"because:{b}"}
    assert set(StoredList.objects.filter(placement="trending").values_list("subject", flat=True)) == {
        "",
        "category:tools",
        "category:toys",
    }


def test_the_old_set_serves_until_the_new_one_is_switched_on(shop):
    first = run_precompute().recommendation_set_id
    a = str(shop["A"].pk)
    store(*(ev(f"late{n}", shop["A"]) for n in range(6)), *(ev(f"late{n}", shop["D"]) for n in range(6)))
    seen = []

    def snapshot(stage):
        building = RecommendationSet.objects.filter(status=RecommendationSet.Status.BUILDING).exists()
        return (stage, serving.active_set_id(), building, len(serving.stored_items("similar", a)))

    def watch(stage, done, total):
        if done == 0 and stage in ("for_you", "activate"):
            seen.append(snapshot(stage))

    second = run_precompute(on_progress=watch).recommendation_set_id
    assert second != first
    # While the new set is being written, readers get the old set and its (shorter) lists, whole.
    assert seen == [("for_you", first, True, 1), ("activate", first, True, 1)]
    assert snapshot("after") == ("after", second, False, 2)
    assert RecommendationSet.objects.get(pk=first).status == RecommendationSet.Status.RETIRED


def test_an_invalid_setting_fails_the_run_and_leaves_the_old_set_serving(shop):
    old = run_precompute().recommendation_set_id
    run = PrecomputeRun.objects.create()
    with bad_settings(TOP_N=0), pytest.raises(ImproperlyConfigured, match="TOP_N"):
        run_precompute(run.pk)
    run.refresh_from_db()
    assert run.status == PrecomputeRun.Status.FAILED
    assert "ImproperlyConfigured" in run.error and "TOP_N" in run.error
    assert run.finished_at is not None
    assert serving.active_set_id() == old
    assert list(RecommendationSet.objects.values_list("status", flat=True)) == ["active"]
    assert serving.stored_items("similar", str(shop["A"].pk))


def test_a_run_that_breaks_mid_write_removes_its_partial_set(shop):
    old = run_precompute().recommendation_set_id

    def break_during_for_you(stage, done, total):
        if stage == "for_you":
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        run_precompute(on_progress=break_during_for_you)
    failed = PrecomputeRun.objects.get(status=PrecomputeRun.Status.FAILED)
    assert failed.error == "RuntimeError: disk full"
    assert failed.stage == "for_you"
    assert RecommendationSet.objects.get().pk == old
    assert StoredList.objects.exclude(recommendation_set_id=old).count() == 0
    assert serving.active_set_id() == old


def test_retired_sets_beyond_one_are_deleted_with_their_lists(shop):
    set_ids = [run_precompute().recommendation_set_id for _ in range(4)]
    stale_build = RecommendationSet.objects.create(created_at=timezone.now() - timedelta(days=2))
    fresh_build = RecommendationSet.objects.create()
    run_precompute()
    remaining = dict(RecommendationSet.objects.values_list("pk", "status"))
    assert stale_build.pk not in remaining, "a build abandoned by a dead run is cleaned up"
    assert remaining[fresh_build.pk] == "building", "a build that may still be running is left alone"
    assert sorted(s for s in remaining.values() if s != "building") == ["active", "retired"]
    assert set_ids[3] in remaining
    assert not StoredList.objects.filter(recommendation_set_id__in=set_ids[:3]).exists()


def test_sales_counts_come_from_purchase_quantities(shop):
    ProductProfile.objects.filter(product_id=str(shop["D"].pk)).update(sales_count=99)
    store(
        ev("buyer1", shop["A"], "purchase", quantity=2),
        ev("buyer2", shop["A"], "purchase", quantity=3),
        ev("buyer2", shop["B"], "purchase"),
    )
    run = run_precompute()
    counts = dict(ProductProfile.objects.values_list("product_id", "sales_count"))
    assert counts[str(shop["A"].pk)] == 5
    assert counts[str(shop["B"].pk)] == 1
    assert counts[str(shop["C"].pk)] == 0
    assert counts[str(shop["D"].pk)] == 0, "no purchase events: the stale count is corrected"
    assert run.stats["sales_counts_changed"] == 3


def test_progress_walks_the_stages_in_order_and_reaches_one(shop):
    stages = []
    fractions = []

    def watch(stage, done, total):
        if not stages or stages[-1] != stage:
            stages.append(stage)
        fractions.append(PrecomputeRun.objects.get(status=PrecomputeRun.Status.RUNNING).progress)

    run = run_precompute(on_progress=watch)
    assert stages == list(STAGES)
    assert fractions == sorted(fractions)
    assert run.progress == 1.0


def test_the_command_prints_its_table(shop):
    out = StringIO()
    call_command("precompute_recommendations", "--no-progress", stdout=out)
    text = out.getvalue()
    assert "succeeded" in text
    for row in ("events used", "shoppers", "products", "lists: for_you", "lists: similar", "seconds: total"):
        assert row in text
    assert any(line.split() == ["lists:", "similar", "4"] for line in text.splitlines())
    assert RecommendationSet.objects.filter(status="active").count() == 1


def test_the_command_fails_with_one_line(shop):
    with bad_settings(SIMILAR_N=-1), pytest.raises(CommandError) as failure:
        call_command("precompute_recommendations", "--no-progress", stdout=StringIO())
    message = str(failure.value)
    assert "\n" not in message
    assert "SIMILAR_N" in message


def test_the_task_is_idempotent_for_a_finished_run(shop):
    run = PrecomputeRun.objects.create()
    first = precompute.apply(args=[run.pk]).get()
    assert first["status"] == "succeeded"
    again = precompute.apply(args=[run.pk]).get()
    assert again == first
    assert RecommendationSet.objects.count() == 1
    assert precompute.apply(args=[987654]).get() is None, "a run that does not exist is skipped"


@pytest.fixture
def eager_celery():
    """Run tasks in-process, as the demo does without a broker."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def test_enqueue_sends_the_task_only_after_commit(shop, eager_celery, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = enqueue_precompute()
    assert run.status == PrecomputeRun.Status.PENDING
    assert run.task_id
    assert len(callbacks) == 1
    callbacks[0]()
    run.refresh_from_db()
    assert run.status == PrecomputeRun.Status.SUCCEEDED
    assert run.recommendation_set.status == RecommendationSet.Status.ACTIVE


def test_the_default_schedule_runs_precompute_hourly_and_is_reversible():
    task = PeriodicTask.objects.get(name="Precompute recommendations (hourly)")
    assert task.task == "recommendations.tasks.precompute"
    assert (task.interval.every, task.interval.period) == (1, "hours")
    assert task.enabled
    assert task.task in celery_app.tasks
    migration = importlib.import_module("recommendations.migrations.0002_default_schedule")
    migration.delete_schedule(django_apps, None)
    assert not PeriodicTask.objects.filter(name=task.name).exists()
    migration.create_schedule(django_apps, None)
    assert PeriodicTask.objects.get(name=task.name).interval.every == 1


@override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, "TASKS": "celery"})
def test_admin_run_now_enqueues_and_reports(shop, staff_client, eager_celery, django_capture_on_commit_callbacks):
    """The broker path (TASKS "celery"; the eager app runs the message here). Without a broker the admin starts a
    background process instead: tests/test_background.py."""
    url = reverse("admin:recommendations_precomputerun_run_now")
    assert staff_client.get(url).status_code == 405
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url, follow=True)
    assert response.status_code == 200
    run = PrecomputeRun.objects.get()
    assert run.status == PrecomputeRun.Status.SUCCEEDED
    text = response.content.decode()
    assert f"Precompute run #{run.pk} queued" in text
    assert "Run precompute now" in text
    assert "Pending" in text, "the redirect shows the run queued; the task runs once the request commits"
    later = staff_client.get(reverse("admin:recommendations_precomputerun_changelist")).content.decode()
    assert "Succeeded" in later and "100%" in later


def test_admin_run_now_needs_permission(shop, client):
    client.force_login(make_user(is_staff=True))
    response = client.post(reverse("admin:recommendations_precomputerun_run_now"))
    assert response.status_code == 403, "a direct POST without the add permission is refused, not redirected"
    assert not PrecomputeRun.objects.exists()


def test_admin_activate_action_rolls_back(shop, staff_client):
    old = run_precompute().recommendation_set_id
    new = run_precompute().recommendation_set_id
    response = staff_client.post(
        reverse("admin:recommendations_recommendationset_changelist"),
        {"action": "activate_set", "_selected_action": [old]},
        follow=True,
    )
    assert f"Set #{old} is now active" in response.content.decode()
    assert serving.active_set_id() == old
    assert RecommendationSet.objects.get(pk=new).status == RecommendationSet.Status.RETIRED
    building = RecommendationSet.objects.create()
    with pytest.raises(ValueError, match="still building"):
        activate_set(building.pk)


def test_admin_pages_render(shop, staff_client):
    run_precompute()
    for name in ("event", "productprofile", "recommendationset", "storedlist", "precomputerun"):
        changelist = staff_client.get(reverse(f"admin:recommendations_{name}_changelist"))
        assert changelist.status_code == 200, name
        assert staff_client.get(reverse(f"admin:recommendations_{name}_add")).status_code == 403, name
    detail = staff_client.get(
        reverse("admin:recommendations_recommendationset_change", args=[RecommendationSet.objects.get().pk])
    )
    assert detail.status_code == 200
    assert "<td>similar</td><td>4</td>" in detail.content.decode()
    run_page = staff_client.get(
        reverse("admin:recommendations_precomputerun_change", args=[PrecomputeRun.objects.get().pk])
    )
    page = run_page.content.decode()
    assert "Seconds per stage" in page
    assert "<td>for_you</td>" in page


def test_admin_activate_needs_the_change_permission(shop, client):
    old = run_precompute().recommendation_set_id
    new = run_precompute().recommendation_set_id
    viewer = make_user(is_staff=True)
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_recommendationset"))
    client.force_login(viewer)
    client.post(
        reverse("admin:recommendations_recommendationset_changelist"),
        {"action": "activate_set", "_selected_action": [old]},
    )
    assert serving.active_set_id() == new
