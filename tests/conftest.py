"""Suite-wide fixtures. The suite runs on real PostgreSQL and Redis (see `make test`)."""

from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttles and cached reads live in the shared cache; each test starts from an empty one."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _model_dir(settings, tmp_path_factory):
    """Trained models go to a fresh temporary directory per test, never into the checkout."""
    directory = tmp_path_factory.mktemp("models")
    settings.RECOMMENDATIONS = {**settings.RECOMMENDATIONS, "MODEL_DIR": str(directory)}
    from recommendations.engine import serving_model

    serving_model.forget()
    yield directory
    serving_model.forget()
