"""The layers point down: no import cycle inside the app (imports in function bodies count), and the import-linter
contracts in pyproject.toml hold, and both checks fail when a back edge is added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_graph import ROOT, build_graph, cycles

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_app_has_no_import_cycle_counting_imports_inside_functions() -> None:
    found = cycles(build_graph(ROOT / "recommendations", "recommendations"))
    assert found == [], f"import cycles in recommendations/ (run `python -m tests.import_graph`): {found}"


def test_a_back_edge_inside_a_function_is_a_cycle(tmp_path: Path) -> None:
    package = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "low.py": "def later():\n    from pkg import high\n    return high\n",
            "high.py": "from pkg.low import later\n",
            "sub/__init__.py": "",
            "sub/leaf.py": "from ..low import later\n",
        },
    )
    graph = build_graph(package, "pkg")
    assert graph["pkg.sub.leaf"] == {"pkg.low"}  # a relative import resolves to the module it names
    assert cycles(graph) == [["pkg.high", "pkg.low"]]


def test_an_import_only_for_type_checking_is_no_cycle(tmp_path: Path) -> None:
    package = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import Thing\n",
            "high.py": "import pkg.low\nclass Thing: ...\n",
        },
    )
    assert cycles(build_graph(package, "pkg")) == []


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def app_copy(tmp_path: Path) -> Path:
    """The app's source and the contracts, copied where a test may add a back edge."""
    shutil.copytree(ROOT / "recommendations", tmp_path / "recommendations", ignore=shutil.ignore_patterns("static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layer_contracts_hold(app_copy: Path) -> None:
    result = _lint_imports(app_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_lower_layer_importing_serving_inside_a_function_breaks_the_contract(app_copy: Path) -> None:
    conf = app_copy / "recommendations" / "conf.py"
    back_edge = "\n\ndef _back_edge():\n    from recommendations import serving\n\n    return serving\n"
    conf.write_text(conf.read_text() + back_edge)
    result = _lint_imports(app_copy)
    assert result.returncode != 0
    assert "recommendations.conf" in result.stdout and "recommendations.serving" in result.stdout, result.stdout
    assert build_graph(app_copy / "recommendations", "recommendations")["recommendations.conf"] >= {
        "recommendations.serving"
    }


def test_serving_reaching_training_breaks_the_web_contract(app_copy: Path) -> None:
    store = app_copy / "recommendations" / "lists" / "store.py"
    store.write_text(store.read_text() + "\n\ndef _heavy():\n    from recommendations.training import runs\n")
    result = _lint_imports(app_copy)
    assert result.returncode != 0
    assert "never reaches training or TensorFlow BROKEN" in result.stdout, result.stdout


def test_an_engine_module_importing_django_inside_a_function_breaks_the_engine_contract(app_copy: Path) -> None:
    dataset = app_copy / "recommendations" / "engine" / "dataset.py"
    django_edge = "\n\ndef _from_the_database():\n    from django.db.models import Q\n\n    return Q\n"
    dataset.write_text(dataset.read_text() + django_edge)
    result = _lint_imports(app_copy)
    assert result.returncode != 0
    assert "The engine is pure: no Django, no ORM, no settings, no Celery BROKEN" in result.stdout, result.stdout
    assert "recommendations.engine.dataset -> django" in result.stdout, result.stdout
