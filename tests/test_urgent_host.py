"""Issue 17, items 4, 5, 7, 8, 9 and 15 (kombu): defaults that must hold in a host that copied nothing from the demo.

- The API answers with the app's own throttle rates when the host configured none (4).
- Where tasks run is the app's own decision (RECOMMENDATIONS["TASKS"]): a host without a Celery app or broker runs
  them in-process and never reaches for a broker, and says so once (5); no kombu warning on that path (15).
- A to-many PRODUCT_FIELDS lookup is refused by name, never crashes the sync (7).
- Deleting a user deletes their events, stored lists and cached blocks (8).
- Without a broker, the admin's "Retrain now" / "Run precompute now" start a background process and say so; the web
  process never runs the work or loads TensorFlow (9), and analytics' "Refresh now" says it is done when it is.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from typing import Any

import pytest
from celery import Celery
from celery import _state as celery_state
from celery.app.task import Task
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from recommendations import background, catalog, privacy, serving, tasks, tracking
from recommendations.api import throttling
from recommendations.conf import rec_settings
from recommendations.lists.precompute import run_precompute
from recommendations.models import Event, PrecomputeRun, ProductProfile, StoredList, TrainingRun
from recommendations.serving import stored_items
from tests.factories import active_lists, make_category, make_product, make_small_shop, make_user

pytestmark = pytest.mark.django_db


def recommendations_with(**values: Any) -> dict[str, Any]:
    return {**settings.RECOMMENDATIONS, **values}


# ---- 4. throttle rates ---------------------------------------------------------------------------------------------


def rest_framework_without_rates() -> dict[str, Any]:
    """The demo's REST_FRAMEWORK minus DEFAULT_THROTTLE_RATES: what a host that followed the README has."""
    return {k: v for k, v in settings.REST_FRAMEWORK.items() if k != "DEFAULT_THROTTLE_RATES"}


def visitor_client() -> Client:
    """A browser with its own visitor cookie, so it has a throttle bucket of its own from the first request."""
    client = Client()
    client.cookies[rec_settings.VISITOR_COOKIE_NAME] = uuid.uuid4().hex
    return client


def test_the_api_answers_with_no_throttle_rates_configured():
    product = make_product("Teapot")
    catalog.sync_products()
    client = visitor_client()
    with override_settings(REST_FRAMEWORK=rest_framework_without_rates()):
        read = client.get(reverse("recommendations:recommendations", args=["trending"]))
        ingest = client.post(
            reverse("recommendations:ingest"),
            {"events": [{"event_type": "view", "product_id": str(product.pk)}]},
            content_type="application/json",
        )
    assert read.status_code == 200, read.content
    assert ingest.status_code == 200, ingest.content
    assert ingest.json()["accepted"] == 1
    assert throttling.check_throttle_rates() == []


def test_the_shipped_rates_still_throttle():
    client = visitor_client()
    url = reverse("recommendations:recommendations", args=["trending"])
    limit = int(throttling.DEFAULT_RATES["recommendations_read"].split("/")[0])
    with override_settings(REST_FRAMEWORK=rest_framework_without_rates()):
        codes = [client.get(url).status_code for _ in range(limit + 1)]
    assert codes[:limit] == [200] * limit and codes[limit] == 429


def test_the_app_setting_and_drf_setting_override_the_shipped_rates():
    url = reverse("recommendations:recommendations", args=["trending"])
    with override_settings(
        REST_FRAMEWORK={**rest_framework_without_rates(), "DEFAULT_THROTTLE_RATES": {"recommendations_read": "3/min"}}
    ):
        client = visitor_client()
        assert [client.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
        # The app's own setting wins over DRF's.
        with override_settings(RECOMMENDATIONS=recommendations_with(THROTTLE_RATES={"recommendations_read": "1/min"})):
            fresh = visitor_client()
            assert [fresh.get(url).status_code for _ in range(2)] == [200, 429]


def test_a_bad_rate_or_scope_is_a_check_error_naming_it():
    with override_settings(
        RECOMMENDATIONS=recommendations_with(THROTTLE_RATES={"recommendations_read": "lots", "recommendations_x": None})
    ):
        messages = [e.msg for e in throttling.check_throttle_rates()]
    assert any("'recommendations_read'" in m and "'lots'" in m for m in messages), messages
    assert any("unknown scope 'recommendations_x'" in m for m in messages), messages


# ---- 5. where tasks run --------------------------------------------------------------------------------------------


@pytest.fixture
def shop() -> dict[str, Any]:
    """Shoppers co-view a kite and a yo-yo; precomputed, so a refresh has a set to write into."""
    toys = make_category(slug="toys")
    products = {name: make_product(name, category=toys) for name in ("Kite", "Yo-yo", "Ball", "Drum")}
    catalog.sync_products()
    events = []
    for n in range(5):
        for name in ("Kite", "Yo-yo", "Ball"):
            events.append(tracking.build_event("view", visitor_id=f"{n:032x}", product_id=str(products[name].pk)))
    tracking.store_events(events)
    run_precompute()
    return products


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


# ---- 7. to-many product fields ---------------------------------------------------------------------------------------

USERS_AS_PRODUCTS = {"PRODUCT_MODEL": "auth.User", "PRODUCT_FIELDS": {"name": "username", "category": "groups__name"}}


def test_a_to_many_product_field_is_refused_by_name():
    shelf, sale = Group.objects.create(name="shelf"), Group.objects.create(name="sale")
    both = make_user("both")
    both.groups.add(shelf, sale)
    make_user("one").groups.add(shelf)
    with override_settings(RECOMMENDATIONS=recommendations_with(**USERS_AS_PRODUCTS)):
        errors = catalog.check_product_fields()
        with pytest.raises(CommandError) as refused:
            call_command("sync_products", "--no-progress")
    assert [e.id for e in errors] == ["recommendations.E009"]
    assert "'category'" in errors[0].msg and "'groups__name'" in errors[0].msg and "to-many" in errors[0].msg
    message = str(refused.value)
    assert "groups__name" in message and "not supported yet" in message and "\n" not in message
    assert not ProductProfile.objects.exists(), "nothing was written"


def test_to_one_lookups_pass_and_a_reverse_relation_is_caught():
    from django.contrib.auth import get_user_model

    assert catalog.to_many_lookups(type(make_product("Kite")), {"category": "category__slug"}) == {}
    found = catalog.to_many_lookups(get_user_model(), {"brand": "logentry__object_repr", "name": "username"})
    assert found == {"brand": ("logentry__object_repr", "logentry")}


def test_sync_counts_products_not_joined_rows():
    for name in ("a", "b", "c"):
        make_user(name)
    with override_settings(RECOMMENDATIONS=recommendations_with(PRODUCT_MODEL="auth.User", PRODUCT_FIELDS={})):
        assert catalog.sync_products() == {"synced": 3, "deactivated": 0}


# ---- 8. deleting a user --------------------------------------------------------------------------------------------

WRITE_KEY = "k" * 32


def for_you_api(shopper: str) -> dict[str, Any]:
    response = Client().get(
        reverse("recommendations:recommendations", args=["for_you"]),
        {"shopper": shopper},
        HTTP_X_RECOMMENDATIONS_KEY=WRITE_KEY,
    )
    assert response.status_code == 200, response.content
    return response.json()


@override_settings(RECOMMENDATIONS=recommendations_with(WRITE_KEY=WRITE_KEY))
def test_deleting_a_user_deletes_what_the_app_keeps_about_them():
    shop = make_small_shop()
    user, other = make_user("leaving"), make_user("staying")
    me, them = f"u:{user.pk}", f"u:{other.pk}"
    merged = "a" * 32  # a visitor id that joined the account at login, then browsed logged out
    tracking.store_events(
        [
            tracking.build_event("view", user_id=str(user.pk), product_id=str(shop["Pan"].pk)),
            tracking.build_event("view", user_id=str(user.pk), visitor_id=merged, product_id=str(shop["Pot"].pk)),
            tracking.build_event("view", visitor_id=merged, product_id=str(shop["Wok"].pk)),
            tracking.build_event("view", user_id=str(other.pk), product_id=str(shop["Pan"].pk)),
        ]
    )
    personal = [(shop["Rake"], 0.9, f"because:{shop['Pan'].pk}"), (shop["Hoe"], 0.8, f"because:{shop['Pan'].pk}")]
    active = active_lists(for_you={me: personal, them: personal, f"v:{merged}": personal})
    StoredList.objects.create(recommendation_set=active, placement="for_you@run7", subject=me, items=[])
    before = for_you_api(me)  # cached now
    assert {i["reason"] for i in before["items"][:2]} == {f"because:{shop['Pan'].pk}"}
    assert "Because you looked at" in before["items"][0]["reason_text"]

    user.delete()

    assert not Event.objects.filter(user_id=str(user.pk)).exists()
    assert not Event.objects.filter(shopper__in=[me, f"v:{merged}"]).exists()
    assert not Event.objects.filter(visitor_id=merged).exists()
    assert not StoredList.objects.filter(subject__in=[me, f"v:{merged}"]).exists()
    after = for_you_api(me)
    assert not [i for i in after["items"] if i["reason"].startswith("because:")], after
    assert "Because you looked at" not in str(after)
    block = serving.recommend("for_you", shopper=me)
    assert not [i for i in block.items if i.reason.startswith("because:")]
    # Someone else's data is theirs to keep.
    assert Event.objects.filter(user_id=str(other.pk)).count() == 1
    assert StoredList.objects.filter(subject=them).exists()
    assert for_you_api(them)["items"][0]["reason"] == f"because:{shop['Pan'].pk}"


def test_a_failing_erasure_never_fails_the_user_deletion(monkeypatch, caplog):
    user = make_user("leaving")

    def broken(user_id: str) -> None:
        raise RuntimeError("cache down")

    monkeypatch.setattr(privacy, "erase_user", broken)
    user.delete()
    assert "could not erase" in caplog.text


# ---- 9. staff-started work without a broker --------------------------------------------------------------------------


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    auth = db.get("USER") or ""
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def no_broker(monkeypatch, settings, _model_dir):
    """The admin's process as a host without a broker, and a background process that finds this test's database."""
    if connection.vendor != "postgresql":
        pytest.skip("the background process reaches the test database by its URL")
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "inline"}
    monkeypatch.setenv("DATABASE_URL", _test_database_url())
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "0")
    monkeypatch.setenv("RECOMMENDATIONS_MODEL_DIR", str(_model_dir))
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # the child runs the demo's no-broker settings
    tasks.ANNOUNCED.clear()


def wait_until_finished(model: Any, pk: int, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = model.objects.get(pk=pk)
        if run.status not in ("pending", "running"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"{model.__name__} #{pk} still {model.objects.get(pk=pk).status} after {seconds} s")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_retrain_now_without_a_broker_runs_in_a_background_process(no_broker, staff_client, monkeypatch):
    from tests.factories import write_synthetic_shop

    write_synthetic_shop()
    had_tensorflow = "tensorflow" in sys.modules

    def not_here(*args, **kwargs):
        raise AssertionError("the web process ran the training itself")

    monkeypatch.setattr("recommendations.training.runs.run_training", not_here)
    started = time.monotonic()
    response = staff_client.post(reverse("admin:recommendations_trainingrun_retrain_now"), follow=True)
    seconds = time.monotonic() - started

    run = TrainingRun.objects.get()
    text = response.content.decode()
    assert seconds < 5, f"the admin request took {seconds:.1f} s"
    assert f"Training run #{run.pk} started in a background process (pid " in text, text
    assert "queued" not in text
    assert had_tensorflow or "tensorflow" not in sys.modules
    finished = wait_until_finished(TrainingRun, run.pk, 300)
    assert finished.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.KEPT_OLD), finished.error
    assert finished.task_id == run.task_id and finished.chosen
    page = staff_client.get(reverse("admin:recommendations_trainingrun_changelist")).content.decode()
    assert "Succeeded" in page


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_precompute_now_without_a_broker_runs_in_a_background_process(no_broker, staff_client, monkeypatch):
    make_small_shop()
    monkeypatch.setattr("recommendations.lists.precompute.run_precompute", lambda *a, **k: 1 / 0)
    response = staff_client.post(reverse("admin:recommendations_precomputerun_run_now"), follow=True)
    run = PrecomputeRun.objects.get()
    assert f"Precompute run #{run.pk} started in a background process" in response.content.decode()
    finished = wait_until_finished(PrecomputeRun, run.pk, 120)
    assert finished.status == PrecomputeRun.Status.SUCCEEDED, finished.error
    assert finished.recommendation_set_id


@pytest.mark.django_db(transaction=True)
def test_when_no_process_can_start_the_admin_says_what_to_run(no_broker, staff_client, monkeypatch):
    def cannot(*args, **kwargs):
        raise OSError("no fork for you")

    monkeypatch.setattr(background.subprocess, "Popen", cannot)
    response = staff_client.post(reverse("admin:recommendations_trainingrun_retrain_now"), follow=True)
    run = TrainingRun.objects.get()
    text = response.content.decode()
    assert f"Training run #{run.pk} was not started" in text and "no fork for you" in text
    assert "python manage.py train_recommender" in text
    assert run.status == TrainingRun.Status.FAILED, "it will never run: it does not stay pending"


def test_inside_a_transaction_the_process_starts_on_commit(
    staff_client, monkeypatch, settings, django_capture_on_commit_callbacks
):
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "TASKS": "inline"}
    calls: list[dict[str, Any]] = []

    class FakeProcess:
        pid = 4242

        def __init__(self, command, **kwargs):
            calls.append({"command": command, **kwargs})

        def wait(self):
            return 0

    monkeypatch.setattr(background.subprocess, "Popen", FakeProcess)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(reverse("admin:recommendations_precomputerun_run_now"), follow=True)
    run = PrecomputeRun.objects.get()
    assert "will start in a background process once this request" in response.content.decode()
    assert calls == [], "not before the run's row is committed"
    for callback in callbacks:
        callback()
    [call] = calls
    assert call["command"] == [
        sys.executable,
        "-m",
        "recommendations.background",
        "precompute",
        str(run.pk),
        run.task_id,
    ]
    assert call["env"]["DJANGO_SETTINGS_MODULE"] == os.environ["DJANGO_SETTINGS_MODULE"]


def test_the_background_runner_refuses_a_run_of_another_database():
    run = PrecomputeRun.objects.create(task_id="abc")
    assert background.run("precompute", run.pk, "not-abc") == 1
    assert PrecomputeRun.objects.get(pk=run.pk).status == PrecomputeRun.Status.PENDING
