"""The shipped translations: every catalogue complete (no empty or fuzzy entry) and its compiled .mo current.

A .po edited without recompiling would ship the old wording, and a fuzzy entry is ignored at run time, so both fail
here. The .po is parsed by hand (no polib); the .mo must equal what `msgfmt` makes of the .po now, byte for byte.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CATALOGUES = [
    ROOT / "recommendations" / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po",
    ROOT / "shop" / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po",
]


@dataclass
class Entry:
    """One message of a .po file: its flags and its fields' text, unquoted."""

    flags: set[str] = field(default_factory=set)
    fields: dict[str, str] = field(default_factory=dict)


def read_po(path: Path) -> list[Entry]:
    entries: list[Entry] = []
    entry, current = Entry(), ""
    for raw in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        line = raw.strip()
        if not line:
            if entry.fields:
                entries.append(entry)
            entry, current = Entry(), ""
        elif line.startswith("#,"):
            entry.flags |= {flag.strip() for flag in line[2:].split(",")}
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            entry.fields[current] += ast.literal_eval(line)
        else:
            current, _space, quoted = line.partition(" ")
            entry.fields[current] = ast.literal_eval(quoted)
    return entries


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: p.parts[-5])
def test_every_message_is_translated_and_none_is_fuzzy(po):
    entries = read_po(po)
    header, messages = entries[0], entries[1:]
    assert header.fields["msgid"] == "" and "Language: zh_Hans" in header.fields["msgstr"]
    assert "Plural-Forms: nplurals=1; plural=0;" in header.fields["msgstr"]
    assert len(messages) > 100
    fuzzy = [e.fields["msgid"] for e in entries if "fuzzy" in e.flags]
    assert not fuzzy, f"fuzzy entries are ignored at run time: {fuzzy}"
    untranslated = [
        e.fields["msgid"] for e in messages if not all(v for k, v in e.fields.items() if k.startswith("msgstr"))
    ]
    assert not untranslated, f"untranslated in {po}: {untranslated}"
    # Chinese has one plural form: a second msgstr[1] would be a catalogue made for another language.
    assert all("msgstr[1]" not in e.fields for e in messages)


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: p.parts[-5])
def test_the_compiled_catalogue_is_the_current_one(po):
    msgfmt = shutil.which("msgfmt")
    assert msgfmt, "msgfmt (GNU gettext) is needed to check the compiled catalogues"
    compiled = subprocess.run(
        [msgfmt, "--check", "-o", "-", str(po)], check=True, capture_output=True, cwd=po.parent
    ).stdout
    assert po.with_suffix(".mo").read_bytes() == compiled, f"recompile: msgfmt -o {po.with_suffix('.mo')} {po}"
