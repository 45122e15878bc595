"""Regenerate the README's screenshots (docs/img/home.png, docs/img/product.png) from a fresh demo shop.

    .venv/bin/python -m tests.e2e.screenshots [--out docs/img]

It does what `make demo` does, in a temporary directory and on SQLite, so neither your database nor your
environment's DATABASE_URL / broker / cache is touched: migrate, generate the demo data, train, create the demo
logins, then `runserver` on a free port. Debian's Chromium (as in the browser tests, never a downloaded one)
takes the home page logged in as the demo shopper (their "Recommended for you", with reasons), 1280x1000, and a
product page as an anonymous visitor, 1280 wide and as tall as it takes to show both "Similar products" and
"Frequently bought together". About half a minute on two cores.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.e2e.browser import VIEWPORT, chromium_path, launch_chromium, missing_chromium_message

ROOT = Path(__file__).resolve().parents[2]
DEMO_ARGS = ["--users", "300", "--products", "240", "--days", "60", "--seed", "7"]  # the Makefile's DEMO_ARGS
SHOPPER, SHOPPER_PASSWORD = "shopper", "shopper-demo-password"  # create_demo_logins' defaults
# Prints the most viewed product that can be bought and whose page shows real co-purchases under "Frequently bought
# together" (at least two, after "Similar products" above it has taken its own items), else the most viewed one.
PRODUCT_TO_SHOW = """
from django.db.models import Count
from recommendations import serving
from recommendations.models import Event
from shop.models import Product
views = Event.objects.filter(event_type="view").values("product_id").annotate(n=Count("id"))
buyable = []
for row in views.order_by("-n", "product_id")[:200]:
    product = Product.objects.filter(pk=row["product_id"], is_active=True, stock__gt=0).first()
    if product:
        buyable.append(product)
def co_purchases_shown(product):
    similar = serving.recommend("similar", product_id=str(product.pk))
    shown = [item.product_id for item in similar.items]
    together = serving.recommend("bought_together", product_id=str(product.pk), exclude=shown)
    return sum(item.reason.startswith("together:") for item in together.items)
chosen = next((p for p in buyable if co_purchases_shown(p) >= 2), buyable[0] if buyable else None)
if chosen:
    print(chosen.get_absolute_url())
"""
OWN_SETTINGS = ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CACHE_URL", "DJANGO_SETTINGS_MODULE")


def demo_environment(workdir: Path) -> dict[str, str]:
    """The caller's environment minus anything that points at real services, plus a SQLite file and model dir."""
    env = {k: v for k, v in os.environ.items() if k not in OWN_SETTINGS and not k.startswith("RECOMMENDATIONS_")}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'demo.sqlite3'}",
        RECOMMENDATIONS_MODEL_DIR=str(workdir / "models"),
        DJANGO_SETTINGS_MODULE="shop.settings",
        DJANGO_DEBUG="1",  # runserver serves the static files (CSS, tracker.js) only with DEBUG on
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    print("==> manage.py", " ".join(a.splitlines()[0] if "\n" in a else a for a in args), flush=True)
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True
    )
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"runserver exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise SystemExit(f"runserver did not answer at {url} within {timeout:.0f}s")


def take_screenshots(base_url: str, product_path: str, out: Path, chromium: str) -> None:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium)
        try:
            shopper = browser.new_context(base_url=base_url, viewport=VIEWPORT)
            page = shopper.new_page()
            page.goto("/accounts/login/")
            page.get_by_label("Username").fill(SHOPPER)
            page.get_by_label("Password").fill(SHOPPER_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.goto("/", wait_until="networkidle")
            page.locator('.rec-block[data-rec-placement="for_you"] .rec-item').first.wait_for()
            page.screenshot(path=out / "home.png")
            print(f"wrote {out / 'home.png'}")

            visitor = browser.new_context(base_url=base_url, viewport=VIEWPORT)
            page = visitor.new_page()
            page.goto(product_path, wait_until="networkidle")
            page.locator('.rec-block[data-rec-placement="similar"] .rec-item').first.wait_for()
            together = page.locator('.rec-block[data-rec-placement="bought_together"]')
            together.locator(".rec-item").first.wait_for()
            box = together.bounding_box()  # the page is not scrolled: viewport and page coordinates agree
            height = max(VIEWPORT["height"], int(box["y"] + box["height"]) + 24) if box else VIEWPORT["height"]
            clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
            page.screenshot(path=out / "product.png", full_page=True, clip=clip)
            print(f"wrote {out / 'product.png'}")
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="directory for the PNGs")
    args = parser.parse_args(argv)
    chromium = chromium_path()
    if chromium is None:
        raise SystemExit(missing_chromium_message())
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="shop-screenshots-") as tmp:
        env = demo_environment(Path(tmp))
        manage(env, "migrate", "--noinput", "-v", "0")
        print(manage(env, "generate_demo_data", *DEMO_ARGS, "--no-progress").strip())
        manage(env, "train_recommender", "--no-progress")
        manage(env, "create_demo_logins")
        printed = manage(env, "shell", "--no-imports", "-c", PRODUCT_TO_SHOW).split()
        product_path = printed[-1] if printed else ""
        if not product_path.startswith("/"):
            raise SystemExit("the demo shop has no product to show")

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_serving(base_url + "/", server)
            take_screenshots(base_url, product_path, args.out, chromium)
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
