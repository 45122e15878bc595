"""The web process must never load TensorFlow: it costs ~500 MB and seconds per process."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_web_imports_do_not_load_tensorflow():
    script = textwrap.dedent(
        """
        import importlib, os, sys
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
        import django
        django.setup()
        from django.urls import get_resolver
        get_resolver().url_patterns  # imports every view module the urls name
        import django.contrib.admin
        django.contrib.admin.autodiscover()
        for name in ("shop.urls", "recommendations.urls", "recommendations.templatetags.recommendations",
                     "recommendations.serving", "recommendations.tracking", "recommendations.tasks"):
            importlib.import_module(name)
        import pkgutil, recommendations.api
        for mod in pkgutil.iter_modules(recommendations.api.__path__):
            importlib.import_module(f"recommendations.api.{mod.name}")
        from django.template import engines
        engines["django"].from_string("{% load recommendations %}")
        loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras")))
        print("LOADED:" + ",".join(loaded))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = [line for line in result.stdout.splitlines() if line.startswith("LOADED:")]
    assert loaded == ["LOADED:"], result.stdout
