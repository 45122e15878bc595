"""`recommendations.contrib.oscar` is read from a host's settings.py, before Django is set up and whether or not Oscar
is importable yet: importing it must touch no models, no app registry and no Oscar module. (Its receivers, adapter and
snippets run in a real Oscar shop: tests/hosts/oscar, from the built wheel.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from recommendations.contrib import oscar
from recommendations.product_fields import ProductAdapter, Values
print(json.dumps({
    "keys": sorted(oscar.PRODUCT_FIELDS),
    "category": repr(oscar.PRODUCT_FIELDS["category"]),
    "adapter": issubclass(oscar.OscarProductAdapter, ProductAdapter),
    "loaded": sorted(m for m in sys.modules if m == "oscar" or m.startswith(("oscar.", "django.db.models.base"))),
}))
"""


def test_the_oscar_mapping_imports_before_django_is_set_up() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(out.stdout)
    assert found["keys"] == ["active", "category", "created_at", "name"]
    assert found["category"] == "Values('categories__slug', pick='all', order_by='-categories__depth')"
    assert found["adapter"] is True
    assert found["loaded"] == []  # no Oscar module, no model machinery
