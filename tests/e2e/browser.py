"""Finding and launching the system's Chromium for the browser tests and the README screenshots.

We drive Debian's `chromium` package through Playwright and never let Playwright download a browser of its own
(`playwright install` is never run): the browser comes from the OS package manager like PostgreSQL and Redis do,
so nothing is fetched at test time. This module does not import Django, so the screenshot script can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Browser, Playwright

DEFAULT_CHROMIUM = "/usr/bin/chromium"

# --no-sandbox: Chromium refuses to start its sandbox as root (CI and this machine run as root).
# The rest keep a test run quiet and offline: no GPU, no QUIC, no first-run UI, no background fetches
# (component updates, sync, safe-browsing lists), and /tmp instead of a possibly tiny /dev/shm in containers.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

VIEWPORT = {"width": 1280, "height": 1000}


def chromium_path() -> str | None:
    """The Chromium binary to drive ($CHROMIUM_PATH, else Debian's /usr/bin/chromium), or None if it is absent."""
    path = os.environ.get("CHROMIUM_PATH") or DEFAULT_CHROMIUM
    return path if Path(path).is_file() and os.access(path, os.X_OK) else None


def missing_chromium_message() -> str:
    wanted = os.environ.get("CHROMIUM_PATH") or DEFAULT_CHROMIUM
    return (
        f"browser tests need Chromium at {wanted}: install Debian's package (`apt-get install chromium`) "
        "or point CHROMIUM_PATH at a Chromium binary"
    )


def launch_chromium(playwright: Playwright, path: str) -> Browser:
    """A headless Chromium from the OS at `path`, started with the flags above."""
    return playwright.chromium.launch(executable_path=path, headless=True, args=list(CHROMIUM_ARGS))
