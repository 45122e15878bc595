"""The hourly task through a real Celery worker: `send_due_messages` on a broker of the test's own (a redis-server on
a free port), a `celery worker` process on the test database sending over SMTP to the test's aiosmtpd server. The
task sent twice (a redelivery, or beat overlapping a slow run) sends each e-mail once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

from recommendations import tasks
from recommendations.models import Message
from recommendations.push.consent import set_email_consent
from shop.celery import app as celery_app
from tests.factories import active_lists, child_database_url, make_user
from tests.faults.conftest import RedisServer, producer_at
from tests.push.conftest import SITE

ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT = 90  # seconds: a loaded machine can take a while to boot Django in a worker
DONE_TIMEOUT = 90

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        django_settings.CELERY_TASK_ALWAYS_EAGER, reason="needs CELERY_BROKER_URL (a real Redis broker)"
    ),
]


@dataclass
class Worker:
    process: subprocess.Popen
    read_log: Callable[[], str]


@contextlib.contextmanager
def push_worker(broker_url: str, smtp_port: int) -> Iterator[Worker]:
    """A `celery worker` on `broker_url` for the test database, its e-mail going to the test's SMTP server."""
    name = f"push-{uuid.uuid4().hex[:8]}@localhost"
    log = tempfile.NamedTemporaryFile(prefix="celery-push-", suffix=".log", delete=False)  # noqa: SIM115
    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "DATABASE_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": broker_url,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "RECOMMENDATIONS_SITE_URL": SITE,
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "celery", "-A", "shop", "worker", "--pool", "solo", "-n", name]
    command += ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def read_log() -> str:
        return Path(log.name).read_text(errors="replace")

    try:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        with producer_at(broker_url):
            while not celery_app.control.ping(destination=[name], timeout=1.0):
                if process.poll() is not None:
                    pytest.fail(f"celery worker exited with {process.returncode}:\n{read_log()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"celery worker not ready after {WORKER_READY_TIMEOUT}s:\n{read_log()}")
            yield Worker(process, read_log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        print(f"---- celery worker log ({name}) ----\n{read_log()}")  # shown when the test failed
        log.close()
        os.unlink(log.name)


def test_the_task_on_a_real_worker_sends_each_due_email_once(
    own_redis: RedisServer, smtp_server: Any, smtp: Any, push_shop: Any, weekly: Any, settings: Any
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the worker reaches the test database by its URL")
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "celery"}
    handler, port = smtp_server
    with push_worker(own_redis.url(0), port) as worker:
        read_log = worker.read_log
        # Twice, as a redelivered message or an overlapping beat run would: the keys make the second a no-op.
        tasks._send(tasks.send_due_messages)
        tasks._send(tasks.send_due_messages)
        deadline = time.monotonic() + DONE_TIMEOUT
        while read_log().count("recommendations.tasks.send_due_messages[") < 4:  # received and succeeded, twice
            assert time.monotonic() < deadline, f"the worker did not finish both runs:\n{read_log()}"
            time.sleep(0.2)
        assert read_log().count(" succeeded in ") == 2, read_log()
    assert sorted(r.to[0] for r in handler.received) == ["ann@example.com", "bob@example.com"]
    assert Message.objects.filter(status="sent").count() == 2
    assert Message.objects.filter(status="skipped_weak").count() == 1


def test_a_worker_killed_mid_batch_and_restarted_sends_every_due_email_exactly_once(
    own_redis: RedisServer, smtp_server: Any, smtp: Any, push_shop: Any, weekly: Any, settings: Any
) -> None:
    """SIGKILL while the SMTP server holds the 8th e-mail of a batch of 26; a new worker's run sends the other 18.
    Each shopper gets exactly one: the killed e-mail's row stays "sending" (never sent again), the rest are new."""
    if connection.vendor != "postgresql":
        pytest.skip("the worker reaches the test database by its URL")
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "celery"}
    handler, port = smtp_server
    products = push_shop.products
    more = [make_user(f"kill{n}", email=f"kill{n}@example.com") for n in range(24)]
    for user in more:
        set_email_consent(user.pk, True)
    picks = [(products[name], 1.0 - i / 10, "for_you") for i, name in enumerate(("Kite", "Tent", "Lamp", "Ball"))]
    active_lists(for_you={f"u:{user.pk}": picks for user in [push_shop.users["ann"], push_shop.users["bob"], *more]})
    due = sorted(["ann@example.com", "bob@example.com", *(user.email for user in more)])
    handler.delay = 0.25  # the worker waits on each e-mail's answer: the kill lands while one is being taken
    with push_worker(own_redis.url(0), port) as worker:
        tasks._send(tasks.send_due_messages)
        deadline = time.monotonic() + DONE_TIMEOUT
        while len(handler.received) < 8:
            assert time.monotonic() < deadline, f"the worker sent {len(handler.received)}:\n{worker.read_log()}"
            time.sleep(0.02)
        worker.process.kill()
        worker.process.wait(10)
    assert 8 <= len(handler.received) < len(due)  # killed mid-batch, not after it
    handler.delay = 0.0
    with push_worker(own_redis.url(0), port) as worker:
        tasks._send(tasks.send_due_messages)  # the next hourly run (the killed one's message is not acked either)
        deadline = time.monotonic() + DONE_TIMEOUT
        while " succeeded in " not in worker.read_log():
            assert time.monotonic() < deadline, f"the new worker did not finish:\n{worker.read_log()}"
            time.sleep(0.2)
    assert sorted(address for r in handler.received for address in r.to) == due  # each exactly once
    statuses = sorted(Message.objects.exclude(status="skipped_weak").values_list("status", flat=True))
    assert statuses.count("sending") <= 1 and statuses.count("sent") + statuses.count("sending") == len(due)
