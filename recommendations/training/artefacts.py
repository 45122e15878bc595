"""Model artefacts on disk: written whole or not at all, hash-checked before every load, never pickled.

A model is a directory (`run-<id>/`) of .npz / .json / .keras files written by the recommender's own `save`.
It is written under a temporary name and renamed into place, so a worker killed mid-write leaves only a
`.tmp` directory (removed by the next retrain), never a half model under a real name. Its sha256 covers
every file's name and bytes; `load_recommender` recomputes it and refuses a directory that differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import import_module
from pathlib import Path

from django.conf import settings

from recommendations.conf import rec_settings
from recommendations.engine.base import ItemFeatures, Recommender
from recommendations.engine.candidates import recommender_class

ALLOWED_SUFFIXES = {".npz", ".json", ".keras"}
# Recommender name (params.json) -> the engine module whose verify_keras checks its model.keras against numpy.
KERAS_MODULES = {"neural": "neural", "sequence": "sequence"}


class ArtefactError(Exception):
    """The artefact is missing, altered or unreadable: it must not serve."""


def model_dir() -> Path:
    """MODEL_DIR, or <BASE_DIR>/var/models for a project that names none."""
    configured = rec_settings.MODEL_DIR
    if configured:
        return Path(configured)
    return Path(getattr(settings, "BASE_DIR", Path.cwd())) / "var" / "models"


def digest(directory: Path) -> str:
    """sha256 over every file's relative path and content, in sorted order."""
    directory = Path(directory)
    total = hashlib.sha256()
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    if not files:
        raise ArtefactError(f"{directory} holds no files")
    for path in files:
        total.update(path.relative_to(directory).as_posix().encode())
        total.update(b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                total.update(block)
        total.update(b"\0")
    return total.hexdigest()


def write_artefact(recommender: Recommender, name: str) -> tuple[Path, str]:
    """Save `recommender` as model_dir()/name; returns (path, sha256). Replaces an earlier try of the same name."""
    root = model_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    temporary = root / f"{name}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        recommender.save(temporary)
        for path in temporary.rglob("*"):
            if path.is_file() and path.suffix not in ALLOWED_SUFFIXES:
                raise ArtefactError(f"{recommender.name} wrote {path.name}: only .npz, .json and .keras are allowed")
        sha = digest(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    return final, sha


def load_recommender(path: str | Path, sha256: str, features: ItemFeatures) -> Recommender:
    """The recommender saved at `path`, re-aligned to `features`; ArtefactError unless its hash is `sha256`."""
    directory = Path(path)
    if not directory.is_dir():
        raise ArtefactError(f"model directory {directory} is missing")
    actual = digest(directory)
    if actual != sha256:
        raise ArtefactError(f"model {directory} fails its hash check (expected {sha256[:12]}, found {actual[:12]})")
    try:
        name = json.loads((directory / "params.json").read_text())["name"]
        return recommender_class(name).load(directory, features)
    except ArtefactError:
        raise
    except Exception as exc:
        raise ArtefactError(f"model {directory} cannot be loaded: {type(exc).__name__}: {exc}") from exc


def verify_artefact(path: str | Path, sha256: str, features: ItemFeatures) -> None:
    """Before a model is registered: it loads back under its hash, and each Keras file loads in safe mode and
    agrees with the numpy forward pass that will serve it. Raises ArtefactError otherwise. Imports TensorFlow
    when there is a Keras file: call it from training code only.
    """
    load_recommender(path, sha256, features)
    for keras_file in sorted(Path(path).rglob("model.keras")):
        try:
            kind = json.loads((keras_file.parent / "params.json").read_text())["name"]
            verify_keras = import_module(f"recommendations.engine.{KERAS_MODULES[kind]}").verify_keras
            verify_keras(keras_file.parent)
        except Exception as exc:
            raise ArtefactError(f"{keras_file} failed verification: {exc}") from exc


def remove_unregistered(registered: set[str]) -> list[Path]:
    """Delete model directories (and leftover .tmp ones) that no kept training run points at."""
    root = model_dir()
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    keep = {Path(p).resolve() for p in registered}
    for child in root.iterdir():
        if child.is_dir() and child.resolve() not in keep and child.name.startswith("run-"):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed
