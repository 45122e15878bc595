"""Suite-wide fixtures. The suite runs on real PostgreSQL and Redis (see `make test`)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.core.cache import cache
from django.db import connection
from django.test import Client

from recommendations import breaker, holds, tasks
from tests.factories import child_database_url, closed_port, make_user


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttles and cached reads live in the shared cache; each test starts from an empty one."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _clear_holds():
    """What a process keeps between requests (lists, profiles, the rules' bundle) never carries over between tests."""
    holds.clear_all()
    yield
    holds.clear_all()


@pytest.fixture(autouse=True)
def _closed_breakers():
    """A service a test made unreachable (tests/faults) is not skipped in the next test: breakers start closed."""
    breaker.reset_all()
    yield
    breaker.reset_all()


@pytest.fixture(autouse=True)
def _model_dir(settings, tmp_path_factory):
    """Trained models go to a fresh temporary directory per test, never into the checkout."""
    directory = tmp_path_factory.mktemp("models")
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "MODEL_DIR": str(directory)}
    from recommendations.lists import serving_model

    serving_model.forget()
    yield directory
    serving_model.forget()


@pytest.fixture
def admin_username() -> str | None:
    """The username `admin_user` gets; None lets the factory number it. A module that asserts the name overrides it."""
    return None


@pytest.fixture
def admin_user(db: None, admin_username: str | None) -> Any:
    """A staff superuser: every admin page and action is open to it, so a test is about the page, not permissions
    (tests about permissions use `factories.staff_with`). Tests also read it to check who an action was logged under."""
    return make_user(admin_username, is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(client: Client, admin_user: Any) -> Client:
    """The test client, logged in as `admin_user`."""
    client.force_login(admin_user)
    return client


class TrainingWorker:
    """Stands in for the worker on the training queue: the activation messages the admin sends are kept, and carried
    out here (the task's own code, in this test's transaction) only when the test says so, after the request returned.
    """

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def post(self, client: Client, url: str, data: dict[str, Any] | None = None) -> Any:
        """POST as staff do; the request's on-commit work (sending the task) runs as if its transaction committed."""
        from django.test import TestCase

        with TestCase.captureOnCommitCallbacks(execute=True):
            return client.post(url, data or {}, follow=True)

    def run(self) -> list[dict[str, Any]]:
        """Carry out every message sent so far, in order, as the worker would; returns the tasks' results."""
        from recommendations import tasks

        sent, self.sent = self.sent, []
        return [tasks.activate_model.apply(args=m["args"], task_id=m["task_id"], throw=True).get() for m in sent]


@pytest.fixture
def training_worker(settings: Any, monkeypatch: Any) -> TrainingWorker:
    """The app's tasks go to Celery (RECOMMENDATIONS["TASKS"] = "celery"); activation messages stop at a
    `TrainingWorker` instead of the broker, so a test sees the web request alone, then the worker's part."""
    from recommendations import tasks

    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "celery"}
    worker = TrainingWorker()
    send = tasks._send

    def intercept(task: Any, **options: Any) -> Any:
        if task.name == "recommendations.tasks.activate_model":
            worker.sent.append({"args": options["args"], "task_id": options["task_id"], "queue": task.queue})
            return None
        return send(task, **options)

    monkeypatch.setattr(tasks, "_send", intercept)
    return worker


@pytest.fixture
def no_broker(monkeypatch, settings, _model_dir):
    """The admin's process as a host without a broker, and a background process that finds this test's database."""
    if connection.vendor != "postgresql":
        pytest.skip("the background process reaches the test database by its URL")
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "inline"}
    monkeypatch.setenv("DATABASE_URL", child_database_url())
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "0")
    monkeypatch.setenv("RECOMMENDATIONS_MODEL_DIR", str(_model_dir))
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # the child runs the demo's no-broker settings
    tasks.ANNOUNCED.clear()


@pytest.fixture
def own_redis(tmp_path: Any) -> Any:
    """A redis-server of the test's own on a free port, stopped after the test: fault tests stop and freeze it, never
    the suite's shared one (tests/faults/conftest.py has the server)."""
    from tests.faults.conftest import REDIS_SERVER, RedisServer

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- a real SMTP server (tests/push and the browser test of e-mails) -------------------------------------------------


@dataclass
class Received:
    """What the SMTP server was handed: the envelope's recipients and the parsed message."""

    to: list[str]
    message: EmailMessage

    @property
    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()

    @property
    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()


@dataclass
class SMTPHandler:
    """aiosmtpd's handler: keeps every message; refuses recipients listed in `refuse` (a 550, as a bounce); waits
    `delay` seconds after taking a message before it answers (a slow server: a sender killed then has been read)."""

    received: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.lock:
            self.received.append(Received(list(envelope.rcpt_tos), parsed))
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address in r.to]

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


@pytest.fixture
def smtp_server() -> Iterator[tuple[SMTPHandler, int]]:
    """A real SMTP server on 127.0.0.1 and a free port, stopped after the test."""
    handler = SMTPHandler()
    port = closed_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
