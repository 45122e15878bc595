"""Browser end-to-end fixtures: Debian's Chromium driven by Playwright against pytest-django's live server.

- Chromium is the OS package (/usr/bin/chromium, or $CHROMIUM_PATH); Playwright never downloads a browser.
  Where it is missing the tests skip with a message saying how to get it; with REQUIRE_CHROMIUM=1 (CI sets it)
  they fail instead, so a broken install cannot pass as a green run.
- Playwright and the browser live for this package only (scope="package"), not the session: while Playwright's
  sync API is started, its event loop counts as *running* in the test thread, and Django then refuses every ORM
  call in that thread with SynchronousOnlyOperation. For the browser tests we set DJANGO_ALLOW_ASYNC_UNSAFE while
  Playwright is up (the ORM calls are ordinary blocking calls from the test thread; nothing is shared with the
  loop), and we stop Playwright and restore the variable before the rest of the suite runs.
- `live_server` makes every test here transactional (the server thread must see the rows the test writes), so
  pytest-django orders these tests after the plain database tests.
- Each test gets a fresh browser context (cookies, storage) and page; uncaught page errors are collected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.e2e.browser import VIEWPORT, chromium_path, launch_chromium, missing_chromium_message
from tests.e2e.store import SmallShop, build_shop

ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
TIMEOUT_MS = 10_000  # a step that takes longer than this is broken, not slow; fail fast with Playwright's message


@pytest.fixture(scope="package")
def chromium_executable() -> str:
    path = chromium_path()
    if path is None:
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(missing_chromium_message(), pytrace=False)
        pytest.skip(missing_chromium_message())
    return path


@pytest.fixture(scope="package")
def playwright(chromium_executable: str) -> Iterator[Playwright]:
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    manager = sync_playwright().start()
    try:
        yield manager
    finally:
        manager.stop()
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


@pytest.fixture(scope="package")
def browser(playwright: Playwright, chromium_executable: str) -> Iterator[Browser]:
    browser = launch_chromium(playwright, chromium_executable)
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser, live_server) -> Iterator[BrowserContext]:
    """A fresh browser profile per test, with relative URLs resolved against the live server, of a shopper who has
    answered the consent banner with yes (test_consent_browser.py starts from a browser that has not)."""
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_cookies([{"name": "rec_consent", "value": "granted", "url": live_server.url}])
    yield context
    context.close()


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught JavaScript errors of `page`; a test asserts it stays empty."""
    return []


@pytest.fixture
def page(context: BrowserContext, page_errors: list[str]) -> Page:
    page = context.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    return page


@pytest.fixture
def small_shop(live_server) -> SmallShop:
    """Three categories of five products, browsing history and a precompute (see tests/e2e/store.py)."""
    return build_shop()
