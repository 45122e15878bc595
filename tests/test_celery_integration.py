"""End to end through a real Celery worker: events in, precompute task on the broker, personalised widget out.

Starts `celery worker` as a subprocess on the test database and the Redis broker from the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from celery.result import AsyncResult
from django.conf import settings
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.urls import reverse

from recommendations import catalog, serving, tracking
from recommendations.conf import rec_settings
from recommendations.lists.precompute import run_precompute
from recommendations.models import Event, PrecomputeRun, RecommendationSet, TrainingRun
from recommendations.tasks import TRAINING_QUEUE, enqueue_precompute, enqueue_retrain
from shop.celery import app as celery_app
from tests.engine.synthetic import make_shop as make_synthetic_shop
from tests.factories import child_database_url, make_category, make_product, write_shop

ROOT = Path(__file__).resolve().parent.parent
# Bounded, but generous: a loaded 2-core machine can take a while to boot Django inside the worker.
WORKER_READY_TIMEOUT = 90
TASK_TIMEOUT = 120

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(settings.CELERY_TASK_ALWAYS_EAGER, reason="needs CELERY_BROKER_URL (a real Redis broker)"),
]


@contextlib.contextmanager
def running_worker(model_dir: str, queues: str = f"celery,{TRAINING_QUEUE}", extra_env: dict | None = None):
    """A real worker process for the test database on `queues`; always stopped, its log printed at the end."""
    name = f"itest-{uuid.uuid4().hex[:8]}@localhost"
    env = {
        "RECOMMENDATIONS_MODEL_DIR": str(model_dir),
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)  # noqa: SIM115
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "shop",
        "worker",
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "-Q",
        queues,
        "--loglevel",
        "INFO",
        "-n",
        name,
        # Earlier tests may have left messages on this broker database; they must not run here.
        "--purge",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def read_log() -> str:
        return Path(log.name).read_text(errors="replace")

    try:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"celery worker exited with {proc.returncode}:\n{read_log()}")
            if celery_app.control.ping(destination=[name], timeout=1.0):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"celery worker not ready after {WORKER_READY_TIMEOUT}s:\n{read_log()}")
        yield name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        # Shown by pytest only when the test failed.
        print(f"---- celery worker log ({name}) ----\n{read_log()}")
        log.close()
        os.unlink(log.name)


@pytest.fixture
def worker(transactional_db, _model_dir):
    """A real worker on the default and training queues."""
    with running_worker(_model_dir) as name:
        yield name


def send_views(visitor_id: str, product_ids: list[str]) -> None:
    """The shopper's browsing, the way the JS tracker and back ends send it: through the ingest API."""
    url = reverse("recommendations:ingest")
    client = Client()
    client.cookies[rec_settings.VISITOR_COOKIE_NAME] = visitor_id
    body = {"events": [{"event_type": "view", "product_id": pid} for pid in product_ids]}
    response = client.post(url, data=json.dumps(body), content_type="application/json")
    assert response.status_code < 300, response.content
    assert Event.objects.filter(shopper=f"v:{visitor_id}").count() == len(product_ids)


def render_for_you(visitor_id: str) -> str:
    request = RequestFactory().get("/")
    request.COOKIES[rec_settings.VISITOR_COOKIE_NAME] = visitor_id
    return Template("{% load recommendations %}{% recommended_for_you %}").render(Context({"request": request}))


def make_shop():
    """Hammer+Nails and Kite+Yo-yo are co-viewed by other shoppers; a first precompute has run."""
    tools, toys = make_category(slug="tools"), make_category(slug="toys")
    hammer, nails = make_product("Hammer", category=tools), make_product("Nails", category=tools)
    kite, yoyo = make_product("Kite", category=toys), make_product("Yo-yo", category=toys)
    catalog.sync_products()
    others = []
    for n in range(4):
        others += [("view", f"a{n}", hammer), ("view", f"a{n}", nails)]
        others += [("view", f"c{n}", kite), ("view", f"c{n}", yoyo), ("view", f"k{n}", kite)]
    tracking.store_events(tracking.build_event(t, visitor_id=v, product_id=p.pk) for t, v, p in others)
    run_precompute()
    return hammer, nails, kite, yoyo


def test_a_precompute_on_the_worker_personalises_the_widget(worker):
    hammer, nails, kite, _ = make_shop()

    visitor = uuid.uuid4().hex
    before = render_for_you(visitor)
    assert "Popular" in before  # best sellers until the shopper has a list (trending has a block of its own)
    assert "Because you looked at" not in before

    send_views(visitor, [str(hammer.pk)])
    run = enqueue_precompute()  # autocommit here, so the task is sent at once
    outcome = AsyncResult(run.task_id, app=celery_app).get(timeout=TASK_TIMEOUT)
    run.refresh_from_db()
    assert outcome == {"run_id": run.pk, "status": "succeeded", "set_id": run.recommendation_set_id}
    assert run.status == PrecomputeRun.Status.SUCCEEDED
    assert run.stats["shoppers"] == 13

    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        serving.forget_active_set()  # a per-process cache cannot hear the worker's switch
    after = render_for_you(visitor)
    assert "Because you looked at Hammer" in after
    assert after.index(f'data-rec-product="{nails.pk}"') < after.index(f'data-rec-product="{kite.pk}"')


def test_the_worker_refreshes_a_shopper_soon_after_their_events(worker):
    """No precompute: the API's debounced refresh_shopper task alone personalises the next page."""
    _, _, kite, yoyo = make_shop()
    visitor = uuid.uuid4().hex
    assert "Because you looked at" not in render_for_you(visitor)

    send_views(visitor, [str(kite.pk)])
    deadline = time.monotonic() + TASK_TIMEOUT
    while "Because you looked at Kite" not in (page := render_for_you(visitor)):
        assert time.monotonic() < deadline, page
        time.sleep(0.25)
    assert f'data-rec-product="{yoyo.pk}"' in page
    assert PrecomputeRun.objects.count() == 1  # only the set-up's own run: the worker ran no precompute


def test_a_retrain_on_the_worker_registers_a_model_and_its_lists_follow(worker):
    """The worker trains every default candidate (TensorFlow included, in a solo pool) and serves the pick."""
    data, features = make_synthetic_shop(n_shoppers=150, n_items=60, seed=7)
    write_shop(data, features)

    run = enqueue_retrain()  # autocommit: sent at once, to the training queue
    outcome = AsyncResult(run.task_id, app=celery_app).get(timeout=TASK_TIMEOUT)
    run.refresh_from_db()
    assert outcome == {"run_id": run.pk, "status": "succeeded", "chosen": run.chosen}, run.error
    assert run.is_serving and run.has_artefact
    assert run.candidates.keys() >= set(rec_settings.CANDIDATES)

    # Serving a new model sends a precompute; the worker builds the lists from the model.
    deadline = time.monotonic() + TASK_TIMEOUT
    while not RecommendationSet.objects.filter(status="active", algorithm__startswith="model:").exists():
        assert time.monotonic() < deadline, list(PrecomputeRun.objects.values("status", "error"))
        time.sleep(0.25)
    assert TrainingRun.objects.filter(is_serving=True).count() == 1


def test_a_sharded_precompute_spreads_over_two_worker_processes(transactional_db, _model_dir):
    """Two workers share the for_you stage of one precompute (a Celery chord of shards), then the set switches."""
    data, features = make_synthetic_shop(n_shoppers=150, n_items=60, seed=8)
    write_shop(data, features)
    from recommendations.training.runs import run_training

    run_training(candidates=["item_knn"])
    shards = {"RECOMMENDATIONS_PRECOMPUTE_SHARDS": "4"}
    with (
        running_worker(_model_dir, queues="celery", extra_env=shards) as first,
        running_worker(_model_dir, queues="celery", extra_env=shards) as second,
    ):
        run = enqueue_precompute()
        AsyncResult(run.task_id, app=celery_app).get(timeout=TASK_TIMEOUT)
        deadline = time.monotonic() + TASK_TIMEOUT
        while (run := PrecomputeRun.objects.get(pk=run.pk)).status == PrecomputeRun.Status.RUNNING:
            assert time.monotonic() < deadline, run.stats
            time.sleep(0.25)
    assert run.status == PrecomputeRun.Status.SUCCEEDED, run.error
    shard_reports = run.stats["shards"]
    assert sorted(shard_reports) == ["0", "1", "2", "3"]
    assert {report["worker"] for report in shard_reports.values()} == {first, second}
    shoppers = Event.objects.values("shopper").distinct().count()
    assert sum(report["shoppers"] for report in shard_reports.values()) == shoppers
    active = RecommendationSet.objects.get(status="active")
    assert active.pk == run.recommendation_set_id
    assert active.lists.filter(placement="for_you").count() == run.stats["lists"]["for_you"] > 100
