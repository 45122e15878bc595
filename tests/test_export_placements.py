"""export_recommendations for every placement a set holds: bought_together, buy_again, an experiment arm's
"for_you@run<id>" and "all" (the default), from hand-written stored lists and from a real precompute; bad input
as one line and a non-zero exit from a real `manage.py` process."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from recommendations import catalog
from recommendations.lists.precompute import run_precompute
from recommendations.models import RecommendationSet, StoredList
from tests.factories import child_database_url, make_category, make_product
from tests.lists.test_purchases import START, bought, store

ROOT = Path(__file__).resolve().parent.parent
ALL_HEADER = ["placement", "subject", "rank", "product_id", "score", "reason", "interval_days"]


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("export_recommendations", *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def active_set_with_every_placement() -> RecommendationSet:
    rec_set = RecommendationSet.objects.create(status=RecommendationSet.Status.ACTIVE, activated_at=timezone.now())
    StoredList.objects.bulk_create(
        [
            StoredList(recommendation_set=rec_set, placement="for_you", subject="u:41",
                       items=[["c2", 0.9, "because:c1"], ["t1", 0.5, "because:c1"]]),
            StoredList(recommendation_set=rec_set, placement="for_you@run7", subject="v:abc",
                       items=[["b1", 0.4, "for_you"]]),
            StoredList(recommendation_set=rec_set, placement="for_you@run7", subject="u:41",
                       items=[["t1", 0.6, "because:c2"]]),
            StoredList(recommendation_set=rec_set, placement="similar", subject="c1", items=[["c2", 0.8, "also"]]),
            StoredList(recommendation_set=rec_set, placement="bought_together", subject="c1",
                       items=[["t1", 0.6, "together:c1"], ["b1", 0.3, "together:c1"]]),
            StoredList(recommendation_set=rec_set, placement="buy_again", subject="",
                       items=[["c1", 0.36, "repeat", 14.0], ["t1", 0.2, "repeat", 30.5]]),
            StoredList(recommendation_set=rec_set, placement="trending", subject="category:coffee",
                       items=[["c1", 3.0, "trending"]]),
        ]
    )  # fmt: skip
    # A retired set's lists, of a placement the active set also holds, must not leak into any export.
    old = RecommendationSet.objects.create(status=RecommendationSet.Status.RETIRED)
    StoredList.objects.create(recommendation_set=old, placement="bought_together", subject="c9", items=[["x", 1, "y"]])
    return rec_set


@pytest.mark.django_db
def test_the_default_exports_every_placement_under_one_header():
    rec_set = active_set_with_every_placement()
    out, err = run()
    assert csv_rows(out) == [
        ALL_HEADER,
        ["bought_together", "c1", "1", "t1", "0.6", "together:c1", ""],
        ["bought_together", "c1", "2", "b1", "0.3", "together:c1", ""],
        ["buy_again", "", "1", "c1", "0.36", "repeat", "14.0"],
        ["buy_again", "", "2", "t1", "0.2", "repeat", "30.5"],
        ["for_you", "41", "1", "c2", "0.9", "because:c1", ""],
        ["for_you", "41", "2", "t1", "0.5", "because:c1", ""],
        ["for_you@run7", "41", "1", "t1", "0.6", "because:c2", ""],
        ["for_you@run7", "visitor:abc", "1", "b1", "0.4", "for_you", ""],
        ["similar", "c1", "1", "c2", "0.8", "also", ""],
        ["trending", "coffee", "1", "c1", "3.0", "trending", ""],
    ]
    assert f"Exported 10 rows from 7 lists (6 placements) of set #{rec_set.pk}." in err
    # "all" by name is the same export, and --limit still cuts every list.
    assert run("--placement", "all")[0] == out
    limited = csv_rows(run("--limit", "1")[0])
    assert [row[:3] for row in limited[1:]] == [
        ["bought_together", "c1", "1"],
        ["buy_again", "", "1"],
        ["for_you", "41", "1"],
        ["for_you@run7", "41", "1"],
        ["for_you@run7", "visitor:abc", "1"],
        ["similar", "c1", "1"],
        ["trending", "coffee", "1"],
    ]


@pytest.mark.django_db
def test_all_as_jsonl_gives_every_row_the_same_keys():
    active_set_with_every_placement()
    rows = [json.loads(line) for line in run("--format", "jsonl")[0].splitlines()]
    assert len(rows) == 10 and all(list(row) == ALL_HEADER for row in rows)
    assert rows[2] == {
        "placement": "buy_again",
        "subject": "",
        "rank": 1,
        "product_id": "c1",
        "score": 0.36,
        "reason": "repeat",
        "interval_days": 14.0,
    }
    assert rows[0]["interval_days"] is None


@pytest.mark.django_db
def test_each_new_placement_exports_alone_with_its_own_columns(tmp_path):
    rec_set = active_set_with_every_placement()
    output = tmp_path / "together.csv"
    out, _ = run("--placement", "bought_together", "--output", str(output))
    assert out.strip() == f"Exported 2 rows from 1 bought_together lists of set #{rec_set.pk} to {output}."
    assert csv_rows(output.read_text()) == [
        ["anchor_product_id", "rank", "product_id", "score", "reason"],
        ["c1", "1", "t1", "0.6", "together:c1"],
        ["c1", "2", "b1", "0.3", "together:c1"],
    ]

    out, _ = run("--placement", "buy_again", "--format", "jsonl")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"subject": "", "rank": 1, "product_id": "c1", "score": 0.36, "reason": "repeat", "interval_days": 14.0},
        {"subject": "", "rank": 2, "product_id": "t1", "score": 0.2, "reason": "repeat", "interval_days": 30.5},
    ]

    # An experiment arm's lists read like for_you: user ids and marked visitors.
    assert csv_rows(run("--placement", "for_you@run7")[0]) == [
        ["user_id", "rank", "product_id", "score", "reason"],
        ["41", "1", "t1", "0.6", "because:c2"],
        ["visitor:abc", "1", "b1", "0.4", "for_you"],
    ]
    # The three placements the command always knew keep their exact columns.
    assert csv_rows(run("--placement", "trending")[0])[0] == ["category", "rank", "product_id", "score", "reason"]
    assert csv_rows(run("--placement", "similar")[0])[1] == ["c1", "1", "c2", "0.8", "also"]


@pytest.mark.django_db
def test_a_placement_the_set_does_not_hold_is_refused_naming_what_it_holds():
    rec_set = RecommendationSet.objects.create(status=RecommendationSet.Status.ACTIVE, activated_at=timezone.now())
    StoredList.objects.create(recommendation_set=rec_set, placement="similar", subject="c1", items=[["c2", 1, "x"]])
    StoredList.objects.create(recommendation_set=rec_set, placement="for_you", subject="u:1", items=[["c2", 1, "x"]])
    with pytest.raises(CommandError) as caught:
        run("--placement", "buy_again")
    assert str(caught.value) == (
        f"--placement: unknown placement 'buy_again' in the active set #{rec_set.pk}; "
        'it holds: for_you, similar (or use "all")'
    )
    with pytest.raises(CommandError, match="--limit must be at least 1 \\(a whole number\\), not 'ten'"):
        run("--limit", "ten")


@pytest.mark.django_db
def test_lists_from_a_real_precompute_export_by_placement(tmp_path):
    gear, food = make_category(slug="gear"), make_category(slug="food")
    camera, case = make_product("Camera", category=gear), make_product("Case", category=gear)
    coffee = make_product("Coffee", category=food)
    catalog.sync_products()
    store(
        *(bought(f"k{n}", [camera, case], START + timedelta(days=n)) for n in range(3)),
        *(bought(f"r{n}", [coffee], START + timedelta(days=n + 10 * k)) for n in range(3) for k in range(3)),
    )
    run_precompute()

    together = csv_rows(run("--placement", "bought_together")[0])
    # Anchors in subject order, which is the ids' text order.
    assert [row[:3] + row[4:] for row in together[1:]] == sorted(
        [
            [str(camera.pk), "1", str(case.pk), f"together:{camera.pk}"],
            [str(case.pk), "1", str(camera.pk), f"together:{case.pk}"],
        ]
    )
    [again] = [json.loads(line) for line in run("--placement", "buy_again", "--format", "jsonl")[0].splitlines()]
    assert again == {
        "subject": "",
        "rank": 1,
        "product_id": str(coffee.pk),
        "score": round(3 / (3 + 5.0), 6),
        "reason": "repeat",
        "interval_days": 10.0,
    }
    everything = csv_rows(run()[0])
    held = set(StoredList.objects.filter(recommendation_set__status="active").values_list("placement", flat=True))
    assert {"bought_together", "buy_again"} <= held
    assert {row[0] for row in everything[1:]} == held
    assert len(everything) - 1 == sum(min(len(items), 10) for items in _active_items())


def _active_items() -> list[list]:
    return list(StoredList.objects.filter(recommendation_set__status="active").values_list("items", flat=True))


@pytest.mark.django_db(transaction=True)
def test_bad_input_exits_non_zero_with_one_line_from_manage_py(tmp_path):
    rec_set = active_set_with_every_placement()
    env = {**os.environ, "DATABASE_URL": child_database_url(), "DJANGO_SETTINGS_MODULE": "shop.settings"}

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "export_recommendations", "--no-progress", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    cases = [
        (["--placement", "bestsellers"], "CommandError: --placement: unknown placement 'bestsellers' in the active "
         f'set #{rec_set.pk}; it holds: bought_together, buy_again, for_you, for_you@run7, similar, trending '
         '(or use "all")'),
        (["--format", "xml"], "CommandError: --format: unknown format 'xml'; use one of: csv, jsonl"),
        (["--limit", "0"], "CommandError: --limit must be at least 1 (a whole number), not '0'"),
        (["--output", str(tmp_path / "missing" / "x.csv")],
         f"CommandError: --output: cannot write {tmp_path / 'missing' / 'x.csv'}: No such file or directory"),
        (["--limit"], "manage.py export_recommendations: error: argument --limit: expected one argument"),
    ]  # fmt: skip
    for args, line in cases:
        done = manage(*args)
        assert done.returncode != 0, args
        assert done.stderr.strip().splitlines() == [line], args
        assert done.stdout == "", args

    done = manage("--placement", "buy_again")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == ",1,c1,0.36,repeat,14.0"
