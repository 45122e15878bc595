"""The demo's SQLite settings let two writers meet without "database is locked"; Django's defaults do not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db


ROOT = Path(__file__).resolve().parents[2]


WRITERS = textwrap.dedent(
    """
    import sys, threading, time
    import django
    django.setup()
    from django.conf import settings
    from django.db import connection, connections, transaction
    if sys.argv[1] == "plain":
        settings.DATABASES["default"]["OPTIONS"] = {}  # Django's SQLite defaults, as the demo had them
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE hits (n integer)")
    errors = []

    def writer(n, delay):
        time.sleep(delay)
        try:
            with transaction.atomic():  # a request: it reads, then writes (an event, a refreshed list)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM hits")
                    time.sleep(0.3)
                    cursor.execute("INSERT INTO hits VALUES (%s)", [n])
        except Exception as exc:
            errors.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n, n * 0.05)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM hits")
        print(cursor.fetchone()[0], "|".join(errors))
    """
)


def two_writers(tmp_path: Path, mode: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CACHE_URL", "CELERY_BROKER_URL")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / f'{mode}.sqlite3'}", DJANGO_SETTINGS_MODULE="shop.settings")
    done = subprocess.run(
        [sys.executable, "-c", WRITERS, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rows, _, errors = done.stdout.strip().partition(" ")
    return int(rows), errors


def test_two_writers_on_the_demo_sqlite_settings_both_commit(tmp_path):
    assert two_writers(tmp_path, "demo") == (2, "")


def test_the_same_two_writers_on_djangos_sqlite_defaults_meet_database_is_locked(tmp_path):
    # What the demo did before: proves the scenario above is a real collision, not two writers taking turns.
    rows, errors = two_writers(tmp_path, "plain")
    assert rows == 1 and "database is locked" in errors
