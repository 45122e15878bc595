"""`create_demo_logins` and the Makefile print the address the demo serves."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.factories import make_small_shop

pytestmark = pytest.mark.django_db


ROOT = Path(__file__).resolve().parents[2]


def test_create_demo_logins_prints_the_address_it_is_given(settings, monkeypatch):
    settings.DEBUG = True
    make_small_shop()
    out = io.StringIO()
    call_command("create_demo_logins", "--site", "http://0.0.0.0:8123/", stdout=out)
    assert "The shop: http://0.0.0.0:8123/  The admin: http://0.0.0.0:8123/admin/" in out.getvalue()
    monkeypatch.setenv("DEMO_SITE_URL", "localhost:9000")
    out = io.StringIO()
    call_command("create_demo_logins", stdout=out)
    assert "The shop: http://localhost:9000/" in out.getvalue()
    with pytest.raises(CommandError, match="--site must be an http"):
        call_command("create_demo_logins", "--site", "ftp://x", stdout=io.StringIO())


def test_the_makefile_prints_the_address_it_serves():
    commands = subprocess.run(
        ["make", "-n", "demo-setup", "serve", "SERVE_ADDR=127.0.0.1:8123"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "create_demo_logins --site http://127.0.0.1:8123" in commands
    assert "runserver 127.0.0.1:8123" in commands
    default = subprocess.run(["make", "-n", "demo-setup", "serve"], cwd=ROOT, capture_output=True, text=True).stdout
    served = re.search(r"runserver (\S+)", default).group(1)
    assert f"create_demo_logins --site http://{served}" in default
