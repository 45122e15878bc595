"""Reason codes are spelled once (engine/reasons.py) and every kind has words for the shopper."""

from __future__ import annotations

import pytest

from recommendations.engine import reasons
from recommendations.serving.reasons import reason_text

KINDS = [
    value
    for name, value in vars(reasons).items()
    if name.isupper() and not name.endswith("_") and isinstance(value, str) and name != "ANCHORED"
]


@pytest.mark.parametrize(("kind", "argument"), [("because", "p1"), ("trending", "tea"), ("popular", ""), ("rule", 7)])
def test_a_code_splits_back_into_its_kind_and_argument(kind: str, argument: object) -> None:
    built = reasons.code(kind, argument)
    assert reasons.split(built) == (kind, str(argument))


def test_each_prefix_builds_the_same_code_as_code() -> None:
    prefixes = {name: value for name, value in vars(reasons).items() if name.isupper() and name.endswith("_")}
    assert prefixes
    for name, prefix in prefixes.items():
        assert prefix + "p1" == reasons.code(getattr(reasons, name[:-1]), "p1")


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reads_as_a_sentence(kind: str) -> None:
    assert reason_text(kind, {}), f"reason kind {kind!r} has no wording in serving/reasons.py"
    if kind in reasons.ANCHORED:
        assert "Tea Pot" in reason_text(reasons.code(kind, "p1"), {"p1": "Tea Pot"})
