"""Where tasks run is the app's own decision (RECOMMENDATIONS["TASKS"]): a host without a Celery app or broker runs them
in-process, never reaches for a broker and says so once, with no kombu warning on that path; an in-process refresh that
meets "database is locked" is tried once more, and one that keeps failing is logged and never raises.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest
from celery import Celery
from celery import _state as celery_state
from celery.app.task import Task
from django.db import OperationalError
from django.test import Client, override_settings

from recommendations import tasks
from recommendations.conf import rec_settings
from recommendations.serving import stored_items
from tests.factories import make_co_viewed_toys, recommendations_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop() -> dict[str, Any]:
    """Shoppers co-view a kite and a yo-yo; precomputed, so a refresh has a set to write into."""
    return make_co_viewed_toys()


@pytest.fixture
def fresh_announcement(monkeypatch):
    """The start-up line is said once per process: start from a process that has not said it yet."""
    tasks.ANNOUNCED.clear()


@pytest.fixture
def no_celery_app(monkeypatch, fresh_announcement):
    """A host with no Celery app: Celery falls back to the app it makes itself, configured by nobody."""
    monkeypatch.setattr(celery_state, "default_app", None)
    monkeypatch.setattr(celery_state._tls, "current_app", None)
    yield
    assert celery_state.default_app is None or celery_state.default_app.main == "default"


@pytest.fixture
def published(monkeypatch) -> list[str]:
    """Names of tasks sent towards a broker (apply_async), whatever happens to them after."""
    sent: list[str] = []
    original = Task.apply_async

    def record(self, *args, **kwargs):
        sent.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Task, "apply_async", record)
    return sent


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes: nothing listens there


def view_pages(client: Client, products: list[Any], capture) -> float:
    started = time.monotonic()
    for product in products:
        with capture(execute=True):
            assert client.get(product.get_absolute_url()).status_code == 200
    return time.monotonic() - started


def test_without_a_celery_app_events_refresh_in_process_and_it_is_said_once(
    shop, no_celery_app, published, caplog, django_capture_on_commit_callbacks
):
    assert celery_state.get_current_app().main == "default"
    assert tasks.task_mode() == "inline"
    client = Client()
    with caplog.at_level(logging.INFO):
        view_pages(client, [shop["Kite"], shop["Drum"]], django_capture_on_commit_callbacks)
    shopper = f"v:{client.cookies[rec_settings.VISITOR_COOKIE_NAME].value}"
    assert published == [], "nothing was sent towards a broker"
    assert any(row[2] == f"because:{shop['Kite'].pk}" for row in stored_items("for_you", shopper)), "refresh ran"
    said = [r for r in caplog.records if "tasks run in-process" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert "no Celery app" in said[0].getMessage()


def test_inline_by_setting_never_tries_the_broker(
    shop, published, fresh_announcement, django_capture_on_commit_callbacks
):
    """The demo's app with its broker at a closed port: RECOMMENDATIONS["TASKS"] = "inline" decides, fast."""
    app = celery_state.get_current_app()
    previous = app.conf.broker_url, app.conf.task_always_eager
    app.conf.broker_url, app.conf.task_always_eager = f"redis://127.0.0.1:{closed_port()}/0", False
    try:
        with override_settings(RECOMMENDATIONS=recommendations_with(TASKS="inline")):
            assert tasks.task_mode() == "inline"
            client = Client()
            seconds = view_pages(client, [shop["Kite"]], django_capture_on_commit_callbacks)
    finally:
        app.conf.broker_url, app.conf.task_always_eager = previous
    shopper = f"v:{client.cookies[rec_settings.VISITOR_COOKIE_NAME].value}"
    assert published == []
    assert stored_items("for_you", shopper), "the refresh ran in-process"
    assert seconds < 1.0, f"a page view took {seconds:.2f} s"


def test_the_decision_follows_the_setting_and_the_host_app(monkeypatch, fresh_announcement):
    host = Celery("host", set_as_current=False, fixups=[])
    monkeypatch.setattr(celery_state._tls, "current_app", host)
    host.conf.broker_url = "redis://127.0.0.1:6379/9"
    assert tasks.task_mode() == "celery", "auto: a host app with a broker gets the broker"
    host.conf.task_always_eager = True
    assert tasks.task_mode() == "inline", "auto: an eager host app runs in-process"
    with override_settings(RECOMMENDATIONS=recommendations_with(TASKS="celery")):
        assert tasks.task_mode() == "celery", "the app's own setting decides"
    host.conf.task_always_eager, host.conf.broker_url = False, None
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    assert tasks.task_mode() == "inline", "auto: no broker_url"
    with override_settings(RECOMMENDATIONS=recommendations_with(TASKS="sometimes")):
        from recommendations.conf import check_settings

        assert any("TASKS" in e.msg for e in check_settings())


def test_no_kombu_hostname_warning_when_no_broker_is_meant(
    monkeypatch, fresh_announcement, caplog, published, django_capture_on_commit_callbacks
):
    """The demo without CELERY_BROKER_URL: memory:// and eager. Eager apply_async opened a memory:// connection and
    kombu warned "No hostname was supplied"; inline runs the task without any connection."""
    demo = Celery("demo-like", set_as_current=False, fixups=[])
    demo.conf.update(broker_url="memory://", task_always_eager=True, task_eager_propagates=True)
    monkeypatch.setattr(celery_state._tls, "current_app", demo)
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True) as callbacks:
        tasks.enqueue_analytics_refresh("2026-05-01", "2026-05-01")
    assert len(callbacks) == 1
    assert published == []
    assert not [r for r in caplog.records if "No hostname" in r.getMessage()], caplog.text


def test_an_in_process_refresh_that_meets_database_is_locked_is_tried_once_more(monkeypatch, caplog):
    calls = []

    def refresh_shoppers(shoppers: list[str]) -> int:
        calls.extend(shoppers)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return len(shoppers)

    monkeypatch.setattr("recommendations.lists.refresh.refresh_shoppers", refresh_shoppers)
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        tasks._refresh_quietly(["v:a"])
    assert calls == ["v:a", "v:a"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_in_process_refresh_that_keeps_failing_is_logged_and_never_raises(monkeypatch, caplog):
    calls = []

    def refresh_shoppers(shoppers: list[str]) -> int:
        calls.extend(shoppers)
        raise OperationalError("database is locked")

    monkeypatch.setattr("recommendations.lists.refresh.refresh_shoppers", refresh_shoppers)
    with caplog.at_level(logging.ERROR, logger="recommendations"):
        tasks._refresh_quietly(["v:b"])
    assert calls == ["v:b", "v:b"]
    assert any("refresh of" in r.getMessage() for r in caplog.records)
