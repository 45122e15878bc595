"""Fault tests: a Redis of the test's own, on a free port, that a test stops, freezes and starts again mid-test.

The suite's shared Redis (CACHE_URL, CELERY_BROKER_URL) is never stopped: `own_redis` starts `redis-server` with no
persistence, `cache_on_own_redis` points the default cache at it with the demo's own OPTIONS (socket timeouts),
and `broker_on_own_redis` points the Celery app's producer at it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from recommendations import tasks
from tests.factories import closed_port

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 10.0  # seconds: a loaded machine starts redis-server in milliseconds; this only bounds the wait
BREAKER_SECONDS = 1.0  # the tests' breakers, so recovery is seen within a bounded second, not the demo's 5 (or 30)


class RedisServer:
    """One `redis-server` on 127.0.0.1:<port>, without persistence, that can be stopped and started on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = closed_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        assert self.process is None, "already running"
        command = [REDIS_SERVER or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--databases", "4"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self.process.returncode}")
            if self.answers():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {START_TIMEOUT} s")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stopped the way a crash or `systemctl stop` leaves it: the port refuses connections."""
        if self.process is None:
            return
        if self.frozen:
            self.thaw()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def freeze(self) -> None:
        """Hung, not gone: connections open and nothing answers (SIGSTOP), as a partition or a swapped-out Redis."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self.frozen = False

    def client(self, db: int) -> Any:
        import redis

        return redis.Redis.from_url(self.url(db), socket_timeout=2)


@pytest.fixture
def cache_on_own_redis(own_redis: RedisServer, settings: Any) -> RedisServer:
    """The default cache on `own_redis` (db 1), with the demo's OPTIONS (socket timeouts) and a 1 s breaker."""
    configured = django_settings.CACHES["default"]
    if configured["BACKEND"] != "recommendations.cache_backends.RedisCache":
        pytest.skip("needs CACHE_URL pointing at Redis (the demo's Redis cache settings)")
    options = {**configured.get("OPTIONS", {}), "BREAKER_SECONDS": BREAKER_SECONDS}
    settings.CACHES = {"default": {**configured, "LOCATION": own_redis.url(1), "OPTIONS": options}}
    return own_redis


@contextlib.contextmanager
def producer_at(url: str) -> Iterator[None]:
    """The Celery app publishes to `url` inside the block, and to its own broker again after it.

    The app's pools are kombu's process-wide ones, keyed by broker URL: they are looked up again for `url`, never
    closed (a closed one would stay in kombu's registry and fail every later publish to the suite's broker).
    """
    from shop.celery import app

    names = ("broker_url", "broker_write_url", "broker_read_url")
    saved = {name: app.conf.get(name) for name in names}
    saved_pools = app._pool, app.amqp._producer_pool
    app.conf.update(dict.fromkeys(names, url))
    app._pool = app.amqp._producer_pool = None
    try:
        yield
    finally:
        app.conf.update(saved)
        app._pool, app.amqp._producer_pool = saved_pools


@pytest.fixture
def broker_on_own_redis(own_redis: RedisServer, settings: Any, monkeypatch: Any) -> Iterator[RedisServer]:
    """Tasks go to Celery (RECOMMENDATIONS["TASKS"] = "celery") on `own_redis` (db 0), with a 1 s broker breaker."""
    if django_settings.CELERY_TASK_ALWAYS_EAGER:
        pytest.skip("needs CELERY_BROKER_URL (a real Redis broker)")
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "celery"}
    monkeypatch.setattr(tasks.BROKER, "seconds", BREAKER_SECONDS)
    with producer_at(own_redis.url(0)):
        yield own_redis
