"""Model operations in the admin: Activate, Roll back, Retrain / Precompute now, set activation and beat schedules.

Every operation is a POST that answers 403 to staff without its permission, reports back in a message and leaves
a LogEntry under the user who did it. Runs are real (FAST candidates on a small synthetic shop).
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from recommendations.lists import serving_model
from recommendations.lists.precompute import run_precompute
from recommendations.models import PrecomputeRun, RecommendationSet, TrainingRun
from recommendations.training import runs as training
from tests.factories import serving_pk, staff_with, train_two_runs, write_synthetic_shop

pytestmark = pytest.mark.django_db

TRAINING_LIST = "admin:recommendations_trainingrun_changelist"
PRECOMPUTE_LIST = "admin:recommendations_precomputerun_changelist"
ROLL_BACK = "admin:recommendations_trainingrun_roll_back"
RETRAIN_SCHEDULE = "Retrain the recommender (nightly)"
PRECOMPUTE_SCHEDULE = "Precompute recommendations (hourly)"
WITH_BEAT = ("recommendations", "django_celery_beat")  # the schedules are django_celery_beat PeriodicTasks


@pytest.fixture
def shop():
    return write_synthetic_shop()


@pytest.fixture
def two_runs(shop):
    """Two real runs; the gate made each serve in turn, so the second serves and the first served before it."""
    first, second = train_two_runs()
    assert second.is_serving and first.activated_at < second.activated_at
    return first, second


def activate_url(run: TrainingRun) -> str:
    return reverse("admin:recommendations_trainingrun_activate", args=[run.pk])


def change_page(client, run: TrainingRun) -> str:
    response = client.get(reverse("admin:recommendations_trainingrun_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def change_entries(model: type) -> list[LogEntry]:
    content_type = ContentType.objects.get_for_model(model)
    return list(LogEntry.objects.filter(content_type=content_type, action_flag=CHANGE).order_by("pk"))


def schedules_box(html: str) -> str:
    """The changelist's "Schedules" section only, so nothing else on the page can satisfy an assertion."""
    match = re.search(r'<div class="module" id="rec-beat-schedules".*?</div>', html, re.S)
    assert match, "the changelist has a schedules section"
    return match.group(0)


def links(html: str) -> list[str]:
    return [unescape(href) for href in re.findall(r'href="([^"]+)"', html)]


# ---- Activate -------------------------------------------------------------------------------------------------------


def test_activate_on_the_change_page_makes_the_run_serve_and_is_logged(
    two_runs, staff_client, admin_user, training_worker
):
    first, second = two_runs
    assert activate_url(first) in change_page(staff_client, first)
    serving_page = change_page(staff_client, second)
    assert activate_url(second) not in serving_page, "the serving run offers Roll back, not Activate"
    assert reverse(ROLL_BACK) in serving_page
    assert staff_client.get(activate_url(first)).status_code == 405
    precomputes = PrecomputeRun.objects.count()

    response = training_worker.post(staff_client, activate_url(first))

    assert response.redirect_chain[-1][0] == reverse("admin:recommendations_trainingrun_change", args=[first.pk])
    text = response.content.decode()
    assert f"Training run #{first.pk} was sent to a training worker (task " in text
    assert "Being checked (asked by" in text, "the run's page says the activation is under way"
    assert serving_pk() == second.pk and not change_entries(TrainingRun)
    training_worker.run()
    assert serving_pk() == first.pk
    assert "Activated at" in change_page(staff_client, first)
    assert serving_model.load_serving_model().run_id == first.pk
    first.refresh_from_db()
    assert first.activated_by == admin_user.get_username()
    assert PrecomputeRun.objects.count() == precomputes + 1, "a precompute rewrites the lists from the new model"
    [entry] = change_entries(TrainingRun)
    assert (entry.object_id, entry.user_id) == (str(first.pk), admin_user.pk)
    assert entry.get_change_message() == f"Activated this run's model (before: run #{second.pk})."


def test_activating_the_serving_run_changes_nothing(two_runs, staff_client, training_worker):
    _, second = two_runs
    activated_at = second.activated_at
    precomputes = PrecomputeRun.objects.count()

    text = training_worker.post(staff_client, activate_url(second)).content.decode()

    assert f"Run #{second.pk} already serves; nothing changed." in text
    assert training_worker.sent == []
    second.refresh_from_db()
    assert second.is_serving and second.activated_at == activated_at and second.activated_by == "gate"
    assert PrecomputeRun.objects.count() == precomputes
    assert not change_entries(TrainingRun)


def test_activating_a_run_without_a_model_is_refused(two_runs, staff_client, training_worker):
    _, second = two_runs
    failed = TrainingRun.objects.create(status=TrainingRun.Status.FAILED, error="boom")
    assert activate_url(failed) not in change_page(staff_client, failed), "no Activate button without a model"

    text = training_worker.post(staff_client, activate_url(failed)).content.decode()

    assert f"Run #{failed.pk} was not activated: run #{failed.pk} has no model to serve." in text
    assert training_worker.sent == [], "nothing to load: refused at once"
    assert serving_pk() == second.pk
    assert not change_entries(TrainingRun)
    missing = reverse("admin:recommendations_trainingrun_activate", args=[failed.pk + 1000])
    assert staff_client.post(missing).status_code == 404


def test_a_corrupt_artefact_refuses_activation_and_the_old_model_keeps_serving(two_runs, staff_client, training_worker):
    first, second = two_runs
    victim = sorted(Path(first.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    precomputes = PrecomputeRun.objects.count()

    training_worker.post(staff_client, activate_url(first))
    [result] = training_worker.run()

    assert result["state"] == "refused"
    text = change_page(staff_client, first)
    assert "Refused at" in text and "hash check" in text and "The serving model is unchanged." in text
    assert serving_pk() == second.pk
    assert serving_model.load_serving_model().run_id == second.pk
    assert PrecomputeRun.objects.count() == precomputes
    assert not change_entries(TrainingRun)
    first.refresh_from_db()
    assert first.activated_by == "gate", "the refused run's activation record is untouched"


# ---- Roll back ------------------------------------------------------------------------------------------------------


def test_roll_back_puts_back_the_model_that_served_before(two_runs, staff_client, admin_user, training_worker):
    first, second = two_runs
    # Newer than both but never activated: activation history, not creation order, decides what comes back.
    TrainingRun.objects.create(
        status=TrainingRun.Status.KEPT_OLD,
        chosen="decoy",
        artefact_path=second.artefact_path,
        artefact_sha256=second.artefact_sha256,
    )
    assert reverse(ROLL_BACK) in staff_client.get(reverse(TRAINING_LIST)).content.decode()
    assert staff_client.get(reverse(ROLL_BACK)).status_code == 405

    back = training_worker.post(staff_client, reverse(ROLL_BACK))

    assert back.redirect_chain[-1][0] == reverse(TRAINING_LIST)
    assert f"Rolling back. Training run #{first.pk} was sent to a training worker" in back.content.decode()
    training_worker.run()
    assert serving_pk() == first.pk
    assert serving_model.load_serving_model().run_id == first.pk
    first.refresh_from_db()
    assert first.activated_by == admin_user.get_username()

    # A second roll back puts back the model that served before the first one came back: the second run.
    again = training_worker.post(staff_client, reverse(ROLL_BACK)).content.decode()

    assert f"Rolling back. Training run #{second.pk} was sent to a training worker" in again
    training_worker.run()
    assert serving_pk() == second.pk
    entries = change_entries(TrainingRun)
    assert [(e.object_id, e.user_id) for e in entries] == [
        (str(first.pk), admin_user.pk),
        (str(second.pk), admin_user.pk),
    ]
    assert entries[0].get_change_message() == f"Rolled back to this run's model (before: run #{second.pk})."
    history = staff_client.get(reverse("admin:recommendations_trainingrun_history", args=[first.pk]))
    assert "Rolled back to this run&#x27;s model" in history.content.decode()


def test_roll_back_follows_activation_history_not_creation_order(two_runs, staff_client, training_worker):
    first, second = two_runs
    # A third, newest run (the second's model, hash intact) that staff once activated.
    third = TrainingRun.objects.create(
        status=TrainingRun.Status.KEPT_OLD,
        chosen="item_knn",
        artefact_path=second.artefact_path,
        artefact_sha256=second.artefact_sha256,
    )
    for run in (third, first, second):
        assert training_worker.post(staff_client, activate_url(run)).redirect_chain[0][1] == 302
        training_worker.run()
    assert serving_pk() == second.pk
    # Served in turn: first, second, third, first, second. Before the second's comeback the first served.

    text = training_worker.post(staff_client, reverse(ROLL_BACK)).content.decode()

    assert f"Rolling back. Training run #{first.pk} was sent to a training worker" in text
    training_worker.run()
    assert serving_pk() == first.pk


def test_roll_back_says_so_when_there_is_nothing_to_go_back_to(shop, staff_client):
    text = staff_client.post(reverse(ROLL_BACK), follow=True).content.decode()
    assert "No model serves, so there is nothing to roll back" in text

    only = training.run_training(candidates=["popularity"])
    assert only.is_serving

    text = staff_client.post(reverse(ROLL_BACK), follow=True).content.decode()

    assert f"Nothing to roll back to: no other run served before run #{only.pk}." in text
    assert serving_pk() == only.pk
    assert not change_entries(TrainingRun)


def test_roll_back_refuses_a_previous_model_whose_artefact_fails_its_check(two_runs, staff_client, training_worker):
    first, second = two_runs
    victim = sorted(Path(first.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")

    training_worker.post(staff_client, reverse(ROLL_BACK))
    [result] = training_worker.run()

    assert result["state"] == "refused" and "hash check" in result["reason"]
    assert "hash check" in change_page(staff_client, first)
    assert serving_pk() == second.pk
    assert not change_entries(TrainingRun)


# ---- permissions ----------------------------------------------------------------------------------------------------


def test_every_operation_answers_403_to_staff_without_its_permission(two_runs, client, training_worker):
    first, second = two_runs
    viewer, _ = staff_with(client, "view_trainingrun", "view_precomputerun", apps=WITH_BEAT)
    page = viewer.get(reverse(TRAINING_LIST)).content.decode()
    assert "Retrain now" not in page and reverse(ROLL_BACK) not in page
    assert activate_url(first) not in change_page(viewer, first)
    assert "Run precompute now" not in viewer.get(reverse(PRECOMPUTE_LIST)).content.decode()
    runs, precomputes = TrainingRun.objects.count(), PrecomputeRun.objects.count()

    for name, args in [
        ("admin:recommendations_trainingrun_retrain_now", []),
        ("admin:recommendations_trainingrun_activate", [first.pk]),
        (ROLL_BACK, []),
        ("admin:recommendations_precomputerun_run_now", []),
    ]:
        assert viewer.post(reverse(name, args=args)).status_code == 403, name

    assert serving_pk() == second.pk
    assert (TrainingRun.objects.count(), PrecomputeRun.objects.count()) == (runs, precomputes)
    assert not LogEntry.objects.exists()

    # The change permission alone is what Activate and Roll back need.
    assert training_worker.sent == []
    editor, user = staff_with(client, "view_trainingrun", "change_trainingrun", apps=WITH_BEAT)
    assert training_worker.post(editor, activate_url(first)).redirect_chain[0][1] == 302
    training_worker.run()
    assert serving_pk() == first.pk
    assert training_worker.post(editor, reverse(ROLL_BACK)).redirect_chain[0][1] == 302
    training_worker.run()
    assert serving_pk() == second.pk
    assert [e.user_id for e in change_entries(TrainingRun)] == [user.pk, user.pk]


def test_retrain_and_precompute_now_are_logged_under_the_user(staff_client, admin_user):
    staff_client.post(reverse("admin:recommendations_trainingrun_retrain_now"))
    staff_client.post(reverse("admin:recommendations_precomputerun_run_now"))

    training_run, precompute_run = TrainingRun.objects.get(), PrecomputeRun.objects.get()
    added = LogEntry.objects.filter(action_flag=ADDITION, user=admin_user)
    assert added.get(content_type=ContentType.objects.get_for_model(TrainingRun)).object_id == str(training_run.pk)
    entry = added.get(content_type=ContentType.objects.get_for_model(PrecomputeRun))
    assert entry.object_id == str(precompute_run.pk)
    assert entry.get_change_message() == "Queued a precompute from the admin."


def test_activating_a_recommendation_set_is_logged(shop, staff_client, admin_user):
    old = run_precompute().recommendation_set_id
    new = run_precompute().recommendation_set_id

    staff_client.post(
        reverse("admin:recommendations_recommendationset_changelist"),
        {"action": "activate_set", "_selected_action": [old]},
    )

    assert RecommendationSet.objects.get(pk=old).status == RecommendationSet.Status.ACTIVE
    [entry] = change_entries(RecommendationSet)
    assert (entry.object_id, entry.user_id) == (str(old), admin_user.pk)
    assert entry.get_change_message() == f"Activated this set (before: set #{new})."


# ---- beat schedules -------------------------------------------------------------------------------------------------


def test_the_changelists_list_their_beat_schedules_with_working_links(staff_client):
    retrain = PeriodicTask.objects.get(name=RETRAIN_SCHEDULE)
    retrain.last_run_at = timezone.now()
    retrain.save()
    precompute = PeriodicTask.objects.get(name=PRECOMPUTE_SCHEDULE)
    precompute.enabled = False
    precompute.save()

    box = schedules_box(staff_client.get(reverse(TRAINING_LIST)).content.decode())
    assert "recommendations.tasks.retrain" in box
    assert RETRAIN_SCHEDULE in box and PRECOMPUTE_SCHEDULE not in box
    assert "0 3 * * * (m/h/dM/MY/d) UTC" in box
    assert "<td>Yes</td>" in box and "never" not in box
    edit = reverse("admin:django_celery_beat_periodictask_change", args=[retrain.pk])
    assert edit in links(box)
    page = staff_client.get(edit)
    assert page.status_code == 200 and RETRAIN_SCHEDULE in page.content.decode()

    box = schedules_box(staff_client.get(reverse(PRECOMPUTE_LIST)).content.decode())
    assert PRECOMPUTE_SCHEDULE in box and "every hour" in box
    assert "Refresh analytics" not in box, "only the schedules that send this task"
    assert "<td>No</td>" in box and "never" in box
    edit = reverse("admin:django_celery_beat_periodictask_change", args=[precompute.pk])
    assert edit in links(box)
    assert staff_client.get(edit).status_code == 200


def test_without_a_schedule_the_changelist_links_to_adding_one(staff_client):
    PeriodicTask.objects.filter(task="recommendations.tasks.retrain").delete()

    box = schedules_box(staff_client.get(reverse(TRAINING_LIST)).content.decode())

    assert "No schedule sends this task" in box
    [add] = [href for href in links(box) if href.startswith(reverse("admin:django_celery_beat_periodictask_add"))]
    form = staff_client.get(add)
    assert form.status_code == 200
    html = form.content.decode()
    assert f'value="{RETRAIN_SCHEDULE}"' in html, "the add form comes pre-filled"
    assert '<option value="recommendations.tasks.retrain" selected>' in html
    assert 'value="recommendations-training"' in html


def test_schedule_links_show_only_to_staff_who_may_open_them(client):
    viewer, _ = staff_with(client, "view_trainingrun", apps=WITH_BEAT)
    box = schedules_box(viewer.get(reverse(TRAINING_LIST)).content.decode())
    assert RETRAIN_SCHEDULE in box
    assert not links(box)

    beat_viewer, _ = staff_with(client, "view_trainingrun", "view_periodictask", apps=WITH_BEAT)
    box = schedules_box(beat_viewer.get(reverse(TRAINING_LIST)).content.decode())
    [edit] = links(box)
    assert beat_viewer.get(edit).status_code == 200


def test_an_activation_whose_worker_keeps_dying_gives_up_after_run_max_attempts(two_runs, settings):
    """Each delivery counts itself on the run before it loads the model: a model whose loading kills the worker (the
    message comes back after every loss) is refused after RUN_MAX_ATTEMPTS instead of circling for ever."""
    first, second = two_runs
    token = training.request_activation(first.pk, by="staff")
    limit = int(training.rec_settings.RUN_MAX_ATTEMPTS)
    for attempt in range(1, limit + 1):  # deliveries that died while loading: counted, then nothing
        assert training._count_activation_attempt(first.pk, token) == attempt

    outcome = training.activate_requested(first.pk, token)

    assert outcome.state == "refused" and f"Gave up after {limit} attempts" in outcome.reason
    first.refresh_from_db()
    assert training.activation_request(first) | {"finished_at": None} == {
        **training.activation_request(first),
        "finished_at": None,
        "state": "refused",
        "attempts": limit + 1,
    }
    assert serving_pk() == second.pk, "the serving model is unchanged"
    assert training.activate_requested(first.pk, token).state == "stale", "a later copy does nothing"

    fresh = training.request_activation(first.pk, by="staff")  # a new request starts counting again
    assert training.activate_requested(first.pk, fresh).state == "activated" and serving_pk() == first.pk
