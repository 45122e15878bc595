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
