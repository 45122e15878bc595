"""The README's three steps in a plain Django project (tests/hosts/plain), as a new user would take them.

No Celery app, no broker, no DRF throttle rates, no cache and a product with no `name` or `price` attribute: the
project is migrated, its products synced, its pages served by a real `runserver` on PostgreSQL, and the API and the
blocks must work with nothing copied from the demo shop.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
SERVER_READY_TIMEOUT = 60
COMMAND_TIMEOUT = 300

pytestmark = [pytest.mark.integration]


def _admin_dsn() -> dict:
    db = settings.DATABASES["default"]
    return {
        "host": db.get("HOST") or "127.0.0.1",
        "port": db.get("PORT") or 5432,
        "user": db.get("USER") or "postgres",
        "password": db.get("PASSWORD") or None,
        "dbname": "postgres",
    }


@pytest.fixture
def host_database() -> Iterator[str]:
    """A database of the host's own, created and dropped here."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("the host project runs on PostgreSQL")
    dsn = _admin_dsn()
    name = f"rec_host_plain_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(**dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        auth = dsn["user"] + (f":{dsn['password']}" if dsn["password"] else "")
        yield f"postgres://{auth}@{dsn['host']}:{dsn['port']}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def _host_env(database_url: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CELERY", "CACHE_URL", "DATABASE_URL", "RECOMMENDATIONS_", "DJANGO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.hosts.plain.settings",
        HOST_DATABASE_URL=database_url,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def _django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    log = Path(tempfile.mkstemp(prefix="plain-host-", suffix=".log")[1])
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"runserver exited:\n{log.read_text()}") from None
                time.sleep(0.2)
        else:
            raise AssertionError(f"runserver did not listen within {SERVER_READY_TIMEOUT} s:\n{log.read_text()}")
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _browser() -> urllib.request.OpenerDirector:
    """A visitor with a cookie jar of their own."""
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def _say_yes(opener: urllib.request.OpenerDirector, base: str) -> None:
    """Answer the consent banner (README step 4) with yes, as a visitor clicking it would."""
    status, home, _ = _get(opener, f"{base}/")
    assert status == 200 and "data-rec-consent" in home, home
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', home)
    assert token, home
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token.group(1), "personalised": "1", "next": "/"})
    with opener.open(f"{base}/privacy/consent/", data=form.encode(), timeout=30) as response:
        assert response.status == 200 and "data-rec-consent" not in response.read().decode()


def _get(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


SEED = """
from tests.hosts.plain.catalog.models import Item, Shelf
shelves = [Shelf.objects.create(slug=slug) for slug in ("tea", "coffee", "cocoa")]
for i in range(30):
    Item.objects.create(title=f"Host item {i:02d}", shelf=shelves[i % 3], cost=f"{5 + i}.50", blurb=f"blurb {i}")
print(Item.objects.count())
"""


def test_the_readme_steps_give_a_working_api_and_blocks_in_a_plain_project(host_database: str) -> None:
    env = _host_env(host_database)

    checked = _django(env, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    migrated = _django(env, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    seeded = _django(env, "shell", "-c", SEED)
    assert seeded.returncode == 0, seeded.stderr
    synced = _django(env, "sync_products")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "30" in synced.stdout, synced.stdout

    with _server(env) as (base, log):
        # Twelve visitors say yes to the banner and browse; each page view is recorded in-process (no broker).
        for visitor in range(12):
            browser = _browser()
            _say_yes(browser, base)
            for step in range(4):
                item = 1 + (visitor * 3 + step * 7) % 12
                status, _, _ = _get(browser, f"{base}/items/{item}/")
                assert status == 200

        precomputed = _django(env, "precompute_recommendations")
        assert precomputed.returncode == 0, precomputed.stdout + precomputed.stderr

        newcomer = _browser()
        status, home, _ = _get(newcomer, f"{base}/")
        assert status == 200
        titles = set(re.findall(r"Host item \d\d", home))
        assert titles, f"no recommended product is named on the home page:\n{home}"
        assert re.search(r"data-rec-id=", home), home

        status, page, _ = _get(newcomer, f"{base}/items/1/")
        assert status == 200
        assert re.findall(r"Host item \d\d", page.split("<h1>", 1)[1].split("</h1>", 1)[1]), page

        status, body, _headers = _get(newcomer, f"{base}/api/recommendations/trending/")
        assert status == 200, body
        block = json.loads(body)
        assert block["items"], block

        server_log = log.read_text()
    assert "Connection refused" not in server_log, server_log
    assert "amqp" not in server_log.lower(), server_log
    assert "Traceback" not in server_log, server_log
    # The host has no Celery app: the app says once that its work runs in-process, and never dials a broker.
    assert server_log.count("tasks run in-process") == 1, server_log
