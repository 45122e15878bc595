"""The app as pip installs it from the wheel: imported from site-packages, web-only (no TensorFlow), without the
demo, and the host's `manage.py check` passing, or refusing the issue's wrong-features mapping."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import FROM_WHEEL, HOST_DIR

from_wheel = pytest.mark.skipif(not FROM_WHEEL, reason="only meaningful in tests/hosts/run's venv (HOST_FROM_WHEEL=1)")
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"]).resolve()


def _manage(*args: str, **environ: str) -> subprocess.CompletedProcess:
    """`manage.py` in a child process, the way the host's developer runs it (the repository is not on its path)."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOST_DIR), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=HOST_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@from_wheel
def test_the_app_is_imported_from_the_venvs_site_packages() -> None:
    import recommendations

    assert Path(recommendations.__file__).resolve().is_relative_to(SITE_PACKAGES), recommendations.__file__
    repository = HOST_DIR.parents[2]
    assert not any(Path(entry or ".").resolve() == repository for entry in sys.path), sys.path
    # Its templates, static files and migrations came with it.
    package = Path(recommendations.__file__).parent
    assert (package / "templates/recommendations/block.html").is_file()
    assert (package / "static/recommendations").is_dir()
    assert (package / "migrations/0001_initial.py").is_file()


@from_wheel
def test_a_web_only_install_has_no_tensorflow() -> None:
    assert importlib.util.find_spec("tensorflow") is None
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


@from_wheel
def test_installing_the_wheel_did_not_install_the_demo() -> None:
    assert importlib.util.find_spec("shop") is None
    for name in ("shop", "bench", "templates", "static", "tests", "docs"):
        assert not (SITE_PACKAGES / name).exists(), f"the wheel installed a top-level {name!r}"


def test_manage_py_check_passes() -> None:
    checked = _manage("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no issues" in checked.stdout, checked.stdout


def test_the_installed_app_and_the_host_have_every_migration_they_need() -> None:
    """A model change whose migration was left out of the wheel would make the host's makemigrations write one."""
    checked = _manage("makemigrations", "--check", "--dry-run", DATABASE_URL="sqlite://:memory:")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_string_lookup_across_the_many_to_many_is_a_check_error() -> None:
    """The issue's case: "categories__slug" joined one row per category and picked one at random; now it is refused."""
    checked = _manage("check", "--settings=offers_site.settings_wrong_features")
    assert checked.returncode != 0, checked.stdout + checked.stderr
    report = checked.stderr
    assert "recommendations.E009" in report, report
    assert "categories__slug" in report, report
    assert "Values(" in report, report  # the hint names a fix
