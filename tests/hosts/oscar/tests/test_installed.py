"""The app under test is the one pip installed from the wheel, not the repository's copy (tests/hosts/run sets
HOST_FROM_WHEEL=1), and the Oscar integration, its templates and its static file came with it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[4]


@pytest.mark.skipif(os.environ.get("HOST_FROM_WHEEL") != "1", reason="run by tests/hosts/run from the built wheel")
def test_the_app_comes_from_the_installed_wheel() -> None:
    import recommendations
    import recommendations.contrib.oscar

    for module in (recommendations, recommendations.contrib.oscar):
        path = Path(module.__file__).resolve()
        assert "site-packages" in path.parts, path
        assert not path.is_relative_to(REPOSITORY / "recommendations"), path
    package = Path(recommendations.__file__).resolve().parent
    for shipped in (
        "templates/recommendations/oscar/product.html",
        "templates/recommendations/oscar/basket.html",
        "templates/recommendations/oscar/home.html",
        "templates/recommendations/oscar/block_item.html",
        "static/recommendations/oscar.css",
        "contrib/oscar/templatetags/recommendations_oscar.py",
    ):
        assert (package / shipped).is_file(), shipped
