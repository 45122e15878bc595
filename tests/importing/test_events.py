"""import_events refuses rows outside the event time window, one line each. Real PostgreSQL."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from recommendations.models import Event

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"),
]


# The request of the issue: PostgreSQL stores it as 0001-12-31 19:00:00+00 BC, which Python cannot read back.
YEAR_ONE = "0001-01-01T00:00:00+05:00"


def import_events(tmp_path: Path, text: str, *args: str) -> tuple[str, str]:
    path = tmp_path / "events.csv"
    path.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_events", str(path), "--no-progress", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_import_events_refuses_out_of_window_rows_one_line_each(tmp_path):
    recent = (timezone.now() - timedelta(days=3)).isoformat()
    ancient = (timezone.now() - timedelta(days=3650 + 30)).isoformat()
    text = (
        "event_id,user_id,product_id,event_type,timestamp\n"
        f"good,7,p1,view,{recent}\n"
        f"bc,7,p1,view,{YEAR_ONE}\n"
        f"old,7,p1,view,{ancient}\n"
    )
    with pytest.raises(CommandError) as caught:  # a non-zero exit: nothing written without --skip-invalid
        import_events(tmp_path, text)
    lines = [line for line in str(caught.value).splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in lines] == ["line 3", "line 4"]
    assert all("timestamp" in line for line in lines) and "EVENT_MAX_AGE_DAYS" in lines[1]
    assert not Event.objects.exists()

    out, err = import_events(tmp_path, text, "--skip-invalid")
    assert list(Event.objects.values_list("event_id", flat=True)) == ["good"]
    assert "2 invalid rows skipped" in out
    assert "line 3: timestamp" in err and "line 4: timestamp" in err


def test_import_events_names_the_line_and_field_of_text_postgresql_cannot_store(tmp_path):
    # A lone surrogate (valid in a JSON string, not in UTF-8) or a NUL must cost only its own row, named with its
    # field, never the COPY of the whole batch.
    recent = (timezone.now() - timedelta(days=3)).isoformat()

    def row(event_id: str, user_id: str, product_id: str) -> str:
        # user_id and product_id go in as raw JSON string bodies, so "\\ud800" stays an escape json.loads reads.
        return (
            f'{{"event_id": "{event_id}", "user_id": "{user_id}", "product_id": "{product_id}", '
            f'"event_type": "view", "timestamp": "{recent}"}}'
        )

    lines = [row("good", "7", "p1"), row("lone", "7\\ud800", "p1"), row("nul", "7", "p\\u0000")]
    lines.append(row("pair", "\\ud83d\\ude00", "p2"))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CommandError) as caught:
        call_command("import_events", str(path), "--no-progress", stdout=io.StringIO(), stderr=io.StringIO())
    problems = [line for line in str(caught.value).splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in problems] == ["line 2", "line 3"]
    assert "user_id" in problems[0] and "surrogate" in problems[0]
    assert "product_id" in problems[1] and "NUL" in problems[1]
    assert not Event.objects.exists()

    out = io.StringIO()
    call_command("import_events", str(path), "--no-progress", "--skip-invalid", stdout=out, stderr=io.StringIO())
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["good", "pair"]
    assert Event.objects.get(event_id="pair").user_id == "\U0001f600"  # a proper pair is one character, kept
