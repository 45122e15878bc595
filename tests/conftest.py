"""Suite-wide fixtures. The suite runs on real PostgreSQL and Redis (see `make test`)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from recommendations import holds
from tests.factories import make_user


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
