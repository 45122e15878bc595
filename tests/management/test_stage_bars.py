"""Set-up progress bars never run past their totals, even a total learnt late."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from recommendations.management.stage_bars import StageBars

pytestmark = pytest.mark.django_db


NOW = "2024-06-01T12:00:00Z"


SMALL = ["--users", "40", "--products", "40", "--days", "20", "--now", NOW, "--seed", "3", "--no-progress"]


class RecordingBars(StageBars):
    """StageBars that checks, after every report, that no bar has run past its total."""

    def __init__(self) -> None:
        super().__init__(enabled=True)
        self.seen: list[tuple[str, int, int]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        super().__call__(stage, done, total)
        assert self.bar is not None
        self.seen.append((stage, self.bar.n, self.bar.total))
        assert self.bar.n <= self.bar.total, (stage, self.bar.n, self.bar.total)


def test_a_stage_bar_follows_a_total_learnt_late_and_never_runs_past_it():
    bars = RecordingBars()
    bars("fit item_knn", 0, 1)  # the run starts every stage as one step
    for done in range(0, 241, 40):
        bars("fit item_knn", done, 240)  # then the model reports its items
    bars("fit item_knn", 240, 240)
    assert bars.seen[-1] == ("fit item_knn", 240, 240)
    bars("fit neural", 0, 1)
    bars("fit neural", 3, 8)
    bars("fit neural", 9, 8)  # a stray report past the end is held at the total
    assert bars.seen[-1] == ("fit neural", 8, 8)
    bars.close()


OVERRUN = re.compile(r"(\d+)/(\d+) \[")


NO_TOTAL = re.compile(r"^(?P<stage>[a-z_ ]+?)\s*:\s+\d+ \[")  # tqdm's form once n passes the total


def test_train_recommender_bars_stay_within_their_totals(capsys):
    call_command("generate_demo_data", *SMALL, stdout=io.StringIO())
    capsys.readouterr()
    call_command("train_recommender", "--candidates", "popularity,item_knn,content", stdout=io.StringIO())
    lines = [line.strip() for line in re.split(r"[\r\n]+", capsys.readouterr().err) if line.strip()]
    bars = [line for line in lines if "|" in line or NO_TOTAL.match(line)]
    assert any(line.startswith("fit item_knn") for line in bars)
    for line in bars:
        assert not NO_TOTAL.match(line), f"a bar ran past its total: {line!r}"
        found = OVERRUN.search(line)
        assert found and int(found.group(1)) <= int(found.group(2)), line
