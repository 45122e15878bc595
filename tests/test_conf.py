"""The settings' system check: a bad event time window is a check error."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"),
]


def settings_with(**override):
    return override_settings(RECOMMENDATIONS={**settings.RECOMMENDATIONS, **override})


def test_a_bad_window_setting_is_a_check_error():
    from recommendations.conf import check_settings

    with settings_with(EVENT_MAX_AGE_DAYS=0):
        errors = [error for error in check_settings() if "EVENT_MAX_AGE_DAYS" in error.msg]
    assert [error.id for error in errors] == ["recommendations.E006"]
