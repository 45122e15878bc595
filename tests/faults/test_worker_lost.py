"""A worker killed with SIGKILL in the middle of a precompute, a retrain or a refresh, and another worker started: the
work is finished exactly once, within seconds here (minutes with the demo's settings), and the old set serves until
the new one is whole.

Real parts: `celery worker` processes (each in a process group of its own, killed whole), a `redis-server` of the
test's own as the broker, the test database on PostgreSQL. To kill a worker mid-run at a known point, the test holds
an ACCESS EXCLUSIVE lock on the events table: the run claims its row, starts its heartbeat (and a precompute its new
set), then waits on the lock when it reads the events; the test sees it waiting in pg_locks and kills the worker.
The workers run tests/faults/worker_settings.py: heartbeats every 0.5 s, stale after 3 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recommendations import catalog, tasks, tracking
from recommendations.conf import rec_settings
from recommendations.lists.precompute import run_precompute
from recommendations.models import PrecomputeRun, RecommendationSet, StoredList, TrainingRun
from recommendations.training import liveness
from shop.celery import app as celery_app
from tests.engine.synthetic import make_shop as make_synthetic_shop
from tests.factories import child_database_url, make_category, make_product, recommendations_with, write_shop

ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT = 90  # seconds: a loaded machine can take a while to boot Django in a worker
DONE_TIMEOUT = 90  # seconds from the second worker's start until the run must be finished

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        django_settings.CELERY_TASK_ALWAYS_EAGER, reason="needs CELERY_BROKER_URL (a real Redis broker)"
    ),
]


@pytest.fixture
def fast_runs(settings: Any) -> None:
    """This process judges runs as the workers do (worker_settings.py)."""
    if connection.vendor != "postgresql":
        pytest.skip("workers reach the test database by its URL")
    settings.RECOMMENDATIONS = recommendations_with(RUN_HEARTBEAT_SECONDS=0.5, RUN_STALE_SECONDS=3)


class Worker:
    """A `celery worker` process group on the test's broker; `kill()` is SIGKILL to every process in it."""

    def __init__(self, broker_url: str, model_dir: Path, queues: str, pool: str, visibility_timeout: int) -> None:
        self.name = f"lost-{uuid.uuid4().hex[:8]}@localhost"
        self.log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)  # noqa: SIM115
        env = {
            **os.environ,
            "DATABASE_URL": child_database_url(),
            "DATABASE_CONN_MAX_AGE": "0",
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": broker_url,
            "DJANGO_SETTINGS_MODULE": "tests.faults.worker_settings",
            "RECOMMENDATIONS_MODEL_DIR": str(model_dir),
            "TEST_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "PYTHONUNBUFFERED": "1",
        }
        command = [sys.executable, "-m", "celery", "-A", "shop", "worker", "--pool", pool, "--concurrency", "1"]
        command += ["-Q", queues, "-n", self.name, "--loglevel", "INFO"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        # A session (and process group) of its own: the kill reaches the pool's children, and nothing of the test's.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while not celery_app.control.ping(destination=[self.name], timeout=1.0):
            if self.process.poll() is not None:
                pytest.fail(f"celery worker exited with {self.process.returncode}:\n{self.read_log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"celery worker not ready after {WORKER_READY_TIMEOUT}s:\n{self.read_log()}")

    def kill(self) -> None:
        """SIGKILL to the whole group, as the OOM killer or a lost machine would, and reap the parent."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        else:  # its pool children may outlive a killed parent
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        print(f"---- celery worker log ({self.name}) ----\n{self.read_log()}")  # shown when the test failed
        self.log.close()
        os.unlink(self.log.name)

    def read_log(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


@pytest.fixture
def workers(broker_on_own_redis: Any, _model_dir: Path) -> Iterator[Any]:
    """`workers(queues, pool, visibility_timeout)` starts a worker on the test's own broker; all stop at the end."""
    started: list[Worker] = []

    def start(queues: str = "celery", pool: str = "prefork", visibility_timeout: int = 4) -> Worker:
        worker = Worker(broker_on_own_redis.url(0), _model_dir, queues, pool, visibility_timeout)
        started.append(worker)
        worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@contextlib.contextmanager
def events_locked() -> Iterator[Any]:
    """The events table locked by another session: a run that reads events waits there until the block ends."""
    db = connection.settings_dict
    other = psycopg2.connect(
        dbname=db["NAME"],
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
    )
    try:
        with other.cursor() as cursor:
            cursor.execute("LOCK TABLE recommendations_event IN ACCESS EXCLUSIVE MODE")
        yield other
    finally:
        other.rollback()
        other.close()


def wait_until_waiting_on_events(lock_holder: Any, what: str) -> None:
    """Until some session waits for the events table (the worker, mid-run)."""
    deadline = time.monotonic() + 60
    with lock_holder.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'recommendations_event' AND NOT l.granted"
            )
            if cursor.fetchone()[0]:
                return
            assert time.monotonic() < deadline, f"{what} never reached the events"
            time.sleep(0.05)


def wait_for(check: Any, what: Any, timeout: float = DONE_TIMEOUT) -> Any:
    """`check()` once it is true; fails after `timeout` seconds saying `what` (a string, or a callable for one)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.1)
    return value


def broker_state(own_redis: Any) -> dict[str, Any]:
    """What the broker holds, for a failure message: queued and unacknowledged messages, kombu's restore mutex."""
    client = own_redis.client(0)
    return {
        "queued": client.llen("celery"),
        "unacked": client.hlen("unacked"),
        "unacked_index": client.zrange("unacked_index", 0, -1, withscores=True),
        "restore_mutex_ttl": client.ttl("unacked_mutex"),
        "now": time.time(),
    }


def make_shop() -> list[Any]:
    """Hammer+Nails and Kite+Yo-yo co-viewed; a first precompute has run and its set serves."""
    tools, toys = make_category(slug="tools"), make_category(slug="toys")
    products = [make_product(n, category=c) for n, c in (("Hammer", tools), ("Nails", tools), ("Kite", toys))]
    products.append(make_product("Yo-yo", category=toys))
    catalog.sync_products()
    views = []
    for n in range(4):
        views += [("view", f"a{n}", products[0]), ("view", f"a{n}", products[1])]
        views += [("view", f"c{n}", products[2]), ("view", f"c{n}", products[3])]
    tracking.store_events(tracking.build_event(t, visitor_id=v, product_id=p.pk) for t, v, p in views)
    run_precompute()
    return products


def test_a_precompute_whose_worker_is_killed_is_finished_once_by_the_next_worker(fast_runs, workers):
    make_shop()
    old = RecommendationSet.objects.get(status="active")
    first = workers()
    with events_locked() as lock:
        run = tasks.enqueue_precompute()  # autocommit: sent at once
        wait_until_waiting_on_events(lock, "the precompute")
        run.refresh_from_db()
        assert run.status == "running" and run.attempts == 1 and run.worker
        half = run.recommendation_set_id
        assert RecommendationSet.objects.get(pk=half).status == "building"
        first.kill()
    killed_at = timezone.now()
    assert RecommendationSet.objects.get(status="active") == old, "the old set serves while nobody works"

    second = workers()  # its message comes back after the 4 s visibility timeout
    done = wait_for(lambda: PrecomputeRun.objects.filter(pk=run.pk, status="succeeded").first(), "not finished")
    assert done.attempts == 2
    (takeover,) = done.takeovers
    assert takeover["lost_worker"] == run.worker and takeover["by"].split(":")[0] == run.worker.split(":")[0]
    assert not RecommendationSet.objects.filter(pk=half).exists(), "the killed attempt's set was deleted"
    new = RecommendationSet.objects.get(status="active")
    assert new.pk == done.recommendation_set_id != old.pk
    assert RecommendationSet.objects.filter(activated_at__gte=killed_at).count() == 1, "switched on once"
    assert StoredList.objects.filter(recommendation_set=new).count() == sum(done.stats["lists"].values())
    assert "taken over" in second.read_log()

    # Later deliveries (another visibility timeout, a resend by recover_runs) change nothing.
    assert tasks.recover_runs() == {"precompute": [], "retrain": []}
    time.sleep(5)
    done.refresh_from_db()
    assert done.attempts == 2 and RecommendationSet.objects.get(status="active") == new
    assert RecommendationSet.objects.count() == 2


def test_a_precompute_whose_pool_process_is_killed_is_requeued_at_once_and_finished_once(fast_runs, workers):
    """The OOM killer's way: only the pool child dies. reject_on_worker_lost puts the message back at once (an hour's
    visibility timeout here), and the worker's next child takes the run over: its holder's process is gone."""
    make_shop()
    old = RecommendationSet.objects.get(status="active")
    worker = workers(visibility_timeout=3600)
    with events_locked() as lock:
        run = tasks.enqueue_precompute()
        wait_until_waiting_on_events(lock, "the precompute")
        run.refresh_from_db()
        child = int(run.worker.split("/")[0].rpartition(":")[2])
        assert child != worker.process.pid, "the run is in a pool process"
        os.kill(child, signal.SIGKILL)
    done = wait_for(lambda: PrecomputeRun.objects.filter(pk=run.pk, status="succeeded").first(), "not finished")
    assert worker.process.poll() is None, "the worker itself lived on"
    assert done.attempts == 2 and done.takeovers[0]["lost_worker"] == run.worker
    assert RecommendationSet.objects.filter(status="active").get().pk == done.recommendation_set_id != old.pk
    assert not RecommendationSet.objects.filter(status="building").exists()
    assert "WorkerLostError" in worker.read_log()


def test_a_retrain_whose_worker_is_killed_is_taken_over_through_recover_runs(fast_runs, workers, _model_dir):
    """An hour's visibility timeout: the message never comes back in the test, recover_runs alone resends it."""
    data, features = make_synthetic_shop(n_shoppers=120, n_items=40, seed=5)
    write_shop(data, features)
    first = workers(tasks.TRAINING_QUEUE, pool="solo", visibility_timeout=3600)
    with events_locked() as lock:
        run = tasks.enqueue_retrain()
        wait_until_waiting_on_events(lock, "the retrain")
        run.refresh_from_db()
        assert run.status == "running" and run.attempts == 1
        assert tasks.recover_runs() == {"precompute": [], "retrain": []}, "alive: nothing is sent"
        first.kill()

    second = workers(tasks.TRAINING_QUEUE, pool="solo", visibility_timeout=3600)
    assert tasks.recover_runs() == {"precompute": [], "retrain": [run.pk]}
    done = wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, status__in=["succeeded", "kept_old"]).first(),
        f"not finished: {TrainingRun.objects.filter(pk=run.pk).values('status', 'error', 'attempts').first()}",
    )
    assert done.attempts == 2 and len(done.takeovers) == 1 and done.takeovers[0]["lost_worker"] == run.worker
    assert done.status == "succeeded" and done.is_serving and done.has_artefact
    assert TrainingRun.objects.filter(is_serving=True).count() == 1
    assert set(done.candidates) >= {"popularity", "item_knn"}
    assert tasks.recover_runs() == {"precompute": [], "retrain": []}
    assert "taken over" in second.read_log()


def test_a_refresh_whose_worker_is_killed_is_done_by_the_next_worker(fast_runs, workers, own_redis):
    products = make_shop()
    visitor = uuid.uuid4().hex
    shopper = f"v:{visitor}"
    first = workers()
    client = Client()
    client.cookies[rec_settings.VISITOR_COOKIE_NAME] = visitor
    # The refresh is sent when the events commit, to run once the debounce window has passed: locked out by then.
    body = {"events": [{"event_type": "view", "product_id": str(products[2].pk)}]}
    response = client.post(reverse("recommendations:ingest"), json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    with events_locked() as lock:
        wait_until_waiting_on_events(lock, "the refresh")
        first.kill()
    active = RecommendationSet.objects.get(status="active")
    mine = StoredList.objects.filter(recommendation_set=active, placement="for_you", subject=shopper)
    assert not mine.exists()

    killed = broker_state(own_redis)
    workers()  # the refresh comes back after the visibility timeout
    row = wait_for(mine.first, lambda: f"never written; broker at the kill {killed}, now {broker_state(own_redis)}")
    assert mine.count() == 1
    assert [item[0] for item in row.items][:1] == [str(products[3].pk)]  # Yo-yo, co-viewed with the Kite
    assert liveness.lost_runs(PrecomputeRun) == []


def test_a_precompute_queued_while_the_broker_was_down_is_sent_again_by_recover_runs(
    fast_runs, workers, broker_on_own_redis
):
    """The message never left: the run stays pending until the beat's sweep sends it once it is RUN_STALE_SECONDS
    old; a run queued just now is left to its own message."""
    make_shop()
    old = RecommendationSet.objects.get(status="active")
    broker_on_own_redis.stop()
    run = tasks.enqueue_precompute()  # autocommit: the send fails at once, logged, nothing raised
    assert tasks.recover_runs() == {"precompute": [], "retrain": []}, "too young to be called unsent"
    broker_on_own_redis.start()
    workers()
    time.sleep(1)
    run.refresh_from_db()
    assert run.status == "pending", "nothing was sent, nothing ran"
    wait_for(lambda: run.created_at < timezone.now() - liveness.stale_after(), "never stale", timeout=10)
    assert tasks.recover_runs() == {"precompute": [run.pk], "retrain": []}
    done = wait_for(lambda: PrecomputeRun.objects.filter(pk=run.pk, status="succeeded").first(), "not finished")
    assert done.attempts == 1 and not done.takeovers
    assert RecommendationSet.objects.get(status="active").pk == done.recommendation_set_id != old.pk
    assert tasks.recover_runs() == {"precompute": [], "retrain": []}
