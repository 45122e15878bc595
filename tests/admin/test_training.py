"""The training-run admin: the registry's list and report pages, "Retrain now", and serving (rolling back) a run."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import current_app
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.urls import reverse

from recommendations.lists.precompute import run_precompute
from recommendations.models import PrecomputeRun, TrainingRun
from recommendations.tasks import TRAINING_QUEUE
from recommendations.training import runs as training
from tests.factories import serving_pk, staff_with, train_two_runs, write_synthetic_shop

pytestmark = pytest.mark.django_db

FAST = ["popularity", "item_knn"]
CHANGELIST = "admin:recommendations_trainingrun_changelist"
RETRAIN_NOW = "admin:recommendations_trainingrun_retrain_now"
CHANGE_PAGE = "admin:recommendations_trainingrun_change"


@pytest.fixture
def shop():
    return write_synthetic_shop()


def serve(worker, client, run: TrainingRun, *more: TrainingRun):
    """The "Serve this model" action as staff send it; the training worker's part runs only on `worker.run()`."""
    return worker.post(
        client, reverse(CHANGELIST), {"action": "serve_model", "_selected_action": [r.pk for r in (run, *more)]}
    )


def sent_to_worker(text: str, run: TrainingRun) -> bool:
    return f"Training run #{run.pk} was sent to a training worker (task " in text and "once it loads" in text


def test_changelist_and_report_render_for_a_finished_run(shop, staff_client):
    run = training.run_training(candidates=FAST, task_id="t-1")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error

    page = staff_client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Retrain now" in text
    assert f"#{run.pk}</a>" in text
    assert "100%" in text and run.chosen in text
    assert f"{run.validation_ndcg:.4f}" in text
    assert "icon-yes.svg" in text, "the serving column is a boolean icon"
    assert "SUCCESS" in text, "a finished run's task state comes from the run, not the result backend"
    for query in ("?is_serving__exact=1", "?status__exact=succeeded"):
        assert f"#{run.pk}</a>" in staff_client.get(reverse(CHANGELIST) + query).content.decode(), query
    assert f"#{run.pk}</a>" not in staff_client.get(reverse(CHANGELIST) + "?is_serving__exact=0").content.decode()
    assert staff_client.get(reverse("admin:recommendations_trainingrun_add")).status_code == 403

    report = staff_client.get(reverse("admin:recommendations_trainingrun_change", args=[run.pk]))
    assert report.status_code == 200
    html = report.content.decode()
    assert "validation NDCG@10" in html and "validation cold recall@10" in html and "test NDCG@10" in html
    for name in FAST:
        row = run.candidates[name]
        assert f"<td>{name}" in html
        assert f"<td>{row['validation']['ndcg']:.4f}</td>" in html
        assert f"<td>{row['validation']['recall']:.4f}</td>" in html
        assert f"<td>{row['test']['ndcg']:.4f}</td>" in html
    assert f"<td>{run.chosen} ✔ chosen</td>" in html
    assert html.count("✔ chosen") == 1
    assert "<th>fit item_knn</th>" in html, "seconds per stage"
    assert f"<th>split.validation_shoppers</th><td>{run.data_stats['split']['validation_shoppers']}</td>" in html
    assert "<th>reason</th><td>No model was serving.</td>" in html
    assert "<th>verdict</th><td>passed: serves</td>" in html
    assert run.artefact_sha256 in html and run.message in html


def test_the_report_escapes_what_it_shows(staff_client):
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.KEPT_OLD,
        chosen="<b>x</b>",
        candidates={"<b>x</b>": {"validation": {"ndcg": 0.5}, "test": {}, "fit": {"skipped": "<i>big</i>"}}},
        gate={"passed": False, "reason": "<script>alert(1)</script>", "new_ndcg": 0.5, "margin": 0.01},
        data_stats={"<u>k</u>": "<u>v</u>"},
        stage_seconds={"<s>fit</s>": 1.0},
    )
    html = staff_client.get(reverse("admin:recommendations_trainingrun_change", args=[run.pk])).content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt; ✔ chosen" in html
    assert "left out: &lt;i&gt;big&lt;/i&gt;" in html
    assert "&lt;u&gt;k&lt;/u&gt;" in html and "&lt;s&gt;fit&lt;/s&gt;" in html
    assert "<th>verdict</th><td>failed: old model kept</td>" in html


def test_retrain_now_queues_a_pending_run(staff_client, admin_user):
    url = reverse(RETRAIN_NOW)
    assert staff_client.get(url).status_code == 405
    assert not TrainingRun.objects.exists()

    response = staff_client.post(url, follow=True)

    assert response.status_code == 200
    # The task is sent on commit; the test's transaction never commits, so the run stays pending here.
    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.PENDING and run.task_id
    text = response.content.decode()
    assert f"Training run #{run.pk} queued (task {run.task_id})" in text
    assert "Pending" in text
    if not current_app.conf.task_always_eager:
        assert "PENDING" in text, "an unfinished run's task state is asked of the result backend"
    entry = LogEntry.objects.get(object_id=str(run.pk))
    assert entry.action_flag == ADDITION and entry.user_id == admin_user.pk


def test_retrain_now_needs_the_add_permission(client):
    viewer, _ = staff_with(client, "view_trainingrun")
    assert "Retrain now" not in viewer.get(reverse(CHANGELIST)).content.decode()
    assert viewer.post(reverse(RETRAIN_NOW)).status_code == 403
    assert not TrainingRun.objects.exists()

    allowed, _ = staff_with(client, "view_trainingrun", "add_trainingrun")
    assert "Retrain now" in allowed.get(reverse(CHANGELIST)).content.decode()
    assert allowed.post(reverse(RETRAIN_NOW)).status_code == 302
    assert TrainingRun.objects.filter(status=TrainingRun.Status.PENDING).count() == 1


def test_serving_an_earlier_run_rolls_back_and_is_logged(shop, staff_client, admin_user, training_worker):
    first, second = train_two_runs()
    assert serving_pk() == second.pk
    precomputes = PrecomputeRun.objects.count()

    response = serve(training_worker, staff_client, first)

    text = response.content.decode()
    assert sent_to_worker(text, first), text
    assert [m["queue"] for m in training_worker.sent] == [TRAINING_QUEUE]
    assert serving_pk() == second.pk, "the web request loads no model and changes nothing by itself"
    [result] = training_worker.run()
    assert result["state"] == "activated"
    assert serving_pk() == first.pk
    first.refresh_from_db()
    assert first.activated_by == admin_user.get_username()
    assert PrecomputeRun.objects.count() == precomputes + 1
    entry = LogEntry.objects.get(object_id=str(first.pk), action_flag=CHANGE)
    assert entry.user_id == admin_user.pk
    assert f"before: run #{second.pk}" in entry.get_change_message()
    history = staff_client.get(reverse("admin:recommendations_trainingrun_history", args=[first.pk]))
    assert "Made this run&#x27;s model serve" in history.content.decode()

    assert "Activated at" in staff_client.get(reverse(CHANGE_PAGE, args=[first.pk])).content.decode()

    both = serve(training_worker, staff_client, first, second)
    assert "Select exactly one training run" in both.content.decode()
    assert training_worker.sent == []
    assert serving_pk() == first.pk


def test_a_tampered_artefact_is_refused_and_nothing_changes(shop, staff_client, training_worker):
    first, second = train_two_runs()
    victim = sorted(Path(first.artefact_path).rglob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    precomputes = PrecomputeRun.objects.count()

    assert sent_to_worker(serve(training_worker, staff_client, first).content.decode(), first)
    [result] = training_worker.run()

    assert result["state"] == "refused" and "hash check" in result["reason"]
    text = staff_client.get(reverse(CHANGE_PAGE, args=[first.pk])).content.decode()
    assert "Refused at" in text and "hash check" in text and "The serving model is unchanged." in text
    assert serving_pk() == second.pk
    assert PrecomputeRun.objects.count() == precomputes
    assert not LogEntry.objects.filter(action_flag=CHANGE).exists()


def test_a_run_without_a_model_is_refused(staff_client, training_worker):
    failed = TrainingRun.objects.create(status=TrainingRun.Status.FAILED, error="boom")
    text = serve(training_worker, staff_client, failed).content.decode()
    assert f"run #{failed.pk} has no model to serve" in text
    assert training_worker.sent == [], "nothing to load: refused at once"
    assert serving_pk() is None


def test_serving_needs_the_change_permission(shop, client, training_worker):
    first, second = train_two_runs()
    viewer, _ = staff_with(client, "view_trainingrun", "add_trainingrun")
    page = viewer.get(reverse(CHANGELIST)).content.decode()
    assert "serve_model" not in page

    serve(training_worker, viewer, first)

    assert training_worker.sent == [] and training_worker.run() == []
    assert serving_pk() == second.pk
    assert not LogEntry.objects.filter(action_flag=CHANGE).exists()

    editor, _ = staff_with(client, "view_trainingrun", "change_trainingrun")
    assert sent_to_worker(serve(training_worker, editor, first).content.decode(), first)
    training_worker.run()
    assert serving_pk() == first.pk


def test_a_serving_run_says_whether_shoppers_lists_come_from_its_model_yet(shop, staff_client):
    """The run reads "succeeded" as soon as its model serves; its page says the lists follow only when the precompute
    its activation sent has finished, and links that precompute."""
    run = training.run_training(candidates=FAST, task_id="t-1")
    assert run.is_serving
    sent = PrecomputeRun.objects.get()  # by the activation, to the broker; no worker has taken it
    assert sent.status == PrecomputeRun.Status.PENDING

    def note() -> str:
        html = staff_client.get(reverse(CHANGE_PAGE, args=[run.pk])).content.decode()
        start = html.index('id="lists-note">') + len('id="lists-note">')
        return html[start : html.index("</li>", start)]

    link = f'<a href="{reverse("admin:recommendations_precomputerun_change", args=[sent.pk])}">'
    waiting = note()
    assert "shoppers still see the lists made before it until " + link in waiting
    assert "(Pending, 0%)" in waiting
    PrecomputeRun.objects.filter(pk=sent.pk).update(status=PrecomputeRun.Status.FAILED)
    assert link in note() and "failed: shoppers still see the lists made before it" in note()

    done = run_precompute()
    made = note()
    assert f"Shoppers' lists come from this model: list set #{done.recommendation_set_id}, made by " in made
    assert reverse("admin:recommendations_precomputerun_change", args=[done.pk]) in made
    # A run that does not serve says nothing about the lists.
    other = TrainingRun.objects.create(status=TrainingRun.Status.KEPT_OLD)
    assert 'id="lists-note"' not in staff_client.get(reverse(CHANGE_PAGE, args=[other.pk])).content.decode()
