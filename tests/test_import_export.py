"""import_catalog, import_events and export_recommendations: validation before writing, idempotent re-imports,
kept timestamps, the fast writer's counts, and a full import → stored lists → export round trip."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from recommendations import importing
from recommendations.models import Event, ProductProfile, RecommendationSet, StoredList

DATA = Path(__file__).parent / "data"
CATALOG_HEADER = "product_id,name,category,brand,price,in_stock,description,created_at"
EVENTS_HEADER = "event_id,user_id,visitor_id,product_id,event_type,timestamp,quantity,value,query"

pytestmark = pytest.mark.django_db


def run(command: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- import_catalog -----------------------------------------------------------------------------------------------


def test_catalog_import_creates_profiles_with_every_column():
    out, _ = run("import_catalog", str(DATA / "catalog.csv"))
    assert "4 products (4 new, 0 updated)" in out
    dark = ProductProfile.objects.get(product_id="c1")
    assert (dark.name, dark.category, dark.brand, dark.price, dark.in_stock, dark.active) == (
        "Dark Roast",
        "coffee",
        "Northwind",
        Decimal("12.50"),
        True,
        True,
    )
    assert dark.text == "Bold and smoky, with notes of cocoa."
    assert dark.created_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert ProductProfile.objects.get(product_id="c2").created_at == datetime(2024, 1, 2, tzinfo=UTC)  # Unix seconds
    tea = ProductProfile.objects.get(product_id="t1")
    assert tea.in_stock is False and tea.price == Decimal("4.00")
    assert tea.created_at == datetime(2024, 1, 3, tzinfo=UTC)  # a bare date is midnight UTC
    book = ProductProfile.objects.get(product_id="b1")
    assert book.created_at is None and book.text == ""


def test_catalog_reimport_updates_in_place_and_leaves_missing_columns_alone(tmp_path):
    run("import_catalog", str(DATA / "catalog.csv"))
    path = write(tmp_path, "update.jsonl", '{"product_id": "c1", "name": "Dark Roast II", "category": "coffee", '
                 '"brand": "Northwind", "price": 13, "in_stock": false}\n')  # fmt: skip
    out, _ = run("import_catalog", path)
    assert "(0 new, 1 updated)" in out
    dark = ProductProfile.objects.get(product_id="c1")
    assert (dark.name, dark.price, dark.in_stock) == ("Dark Roast II", Decimal("13.00"), False)
    # description and created_at were not in the file: what was stored stays.
    assert dark.text == "Bold and smoky, with notes of cocoa."
    assert dark.created_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert ProductProfile.objects.count() == 4


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad_price.csv", f"{CATALOG_HEADER}\np1,A,x,y,1.00,true,,\np2,B,x,y,abc,true,,\n", ["line 3: price"]),
        ("negative.csv", f"{CATALOG_HEADER}\np1,A,x,y,-1,true,,\n", ["line 2: price", "negative"]),
        ("bad_bool.csv", f"{CATALOG_HEADER}\np1,A,x,y,1.00,maybe,,\n", ["line 2: in_stock", "'maybe'"]),
        ("no_id.csv", f"{CATALOG_HEADER}\np1,A,x,y,1,true,,\n,B,x,y,2,true,,\n", ["line 3: product_id: is required"]),
        ("bad_time.csv", f"{CATALOG_HEADER}\np1,A,x,y,1,true,,last week\n", ["line 2: created_at"]),
        ("repeat.csv", f"{CATALOG_HEADER}\np1,A,x,y,1,,,\np1,B,x,y,2,,,\n", ["line 3: product_id", "first on line 2"]),
        ("short_row.csv", f"{CATALOG_HEADER}\np1,A,x,y\n", ["line 2: row: has 4 fields, the header has 8"]),
        ("header.csv", "product_id,name,category,brand,in_stock\np1,A,x,y,true\n", ["missing required", "price"]),
        ("unknown.csv", "product_id,name,category,brand,price,colour\np1,A,x,y,1,red\n", ["unknown column", "colour"]),
        ("empty.csv", "", ["empty"]),
        ("blank.jsonl", "\n\n", ["empty"]),
        (
            "broken.jsonl",
            '{"product_id": "p1", "name": "A", "category": "x", "brand": "y", "price": 1}\n{"product_id": "p2",\n',
            ["line 2: row: not valid JSON"],
        ),
        ("list.jsonl", '["p1", "A"]\n', ["line 1: row: must be a JSON object"]),
        (
            "typo.jsonl",
            '{"product_id": "p1", "name": "A", "category": "x", "brand": "y", "prise": 1}\n',
            ["line 1: prise: unknown field"],
        ),
    ],
)
def test_bad_catalog_is_refused_whole(tmp_path, name, text, expected):
    ProductProfile.objects.create(product_id="keep", name="Already here")
    with pytest.raises(CommandError) as caught:
        run("import_catalog", write(tmp_path, name, text))
    message = str(caught.value)
    for part in expected:
        assert part in message
    assert "nothing was imported" in message
    assert list(ProductProfile.objects.values_list("product_id", flat=True)) == ["keep"]


def test_catalog_skip_invalid_writes_exactly_the_good_rows(tmp_path):
    text = f"{CATALOG_HEADER}\np1,A,x,y,1,true,,\np2,B,x,y,free,true,,\np3,C,x,y,3,nope,,\np4,D,x,y,4,no,,\n"
    out, err = run("import_catalog", write(tmp_path, "mixed.csv", text), "--skip-invalid")
    assert sorted(ProductProfile.objects.values_list("product_id", flat=True)) == ["p1", "p4"]
    assert "2 invalid rows skipped" in out
    assert "line 3: price" in err and "line 4: in_stock" in err


def test_catalog_format_comes_from_the_option_or_the_name(tmp_path):
    path = write(tmp_path, "catalog.txt", f"{CATALOG_HEADER}\np1,A,x,y,1,true,,\n")
    with pytest.raises(CommandError, match="cannot tell the format"):
        run("import_catalog", path)
    run("import_catalog", path, "--format", "csv")
    assert ProductProfile.objects.filter(product_id="p1").exists()


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{CATALOG_HEADER}\np1,Caf\xe9,x,y,1,true,,\n".encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8"):
        run("import_catalog", str(path))
    assert not ProductProfile.objects.exists()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        run("import_catalog", str(tmp_path / "nope.csv"))


# -- import_events ------------------------------------------------------------------------------------------------


def test_event_import_keeps_history_timestamps_and_shoppers():
    before = timezone.now()
    out, _ = run("import_events", str(DATA / "events.jsonl"))
    assert "Imported 6 events; 0 duplicates" in out
    view = Event.objects.get(event_id="e1")
    assert view.occurred_at == view.client_time == datetime(2024, 2, 1, 10, tzinfo=UTC)
    assert view.received_at >= before
    assert (view.shopper, view.product_id, view.quantity, view.value) == ("u:41", "c1", 1, None)
    purchase = Event.objects.get(event_id="e3")
    assert purchase.occurred_at == datetime.fromtimestamp(1706781900, tz=UTC)
    assert (purchase.quantity, purchase.value) == (2, Decimal("25.00"))
    anonymous = Event.objects.get(event_type="view", visitor_id="0123456789abcdef0123456789abcdef")
    assert anonymous.shopper == "v:0123456789abcdef0123456789abcdef"
    assert anonymous.occurred_at == datetime(2024, 2, 2, 9, 30, tzinfo=UTC)  # naive means UTC
    search = Event.objects.get(event_type="search")
    assert search.query == "earl grey" and search.occurred_at == datetime(2024, 2, 2, 8, 29, tzinfo=UTC)
    favourite = Event.objects.get(event_type="favorite")
    assert (favourite.user_id, favourite.shopper) == ("42", "u:42")
    assert favourite.event_id.startswith("imp-")  # derived from the content


def test_reimporting_the_same_file_is_a_no_op(tmp_path):
    text = (
        f"{EVENTS_HEADER}\n"
        ",7,,p1,view,2024-03-01T10:00:00Z,,,\n"
        ",7,,p1,purchase,2024-03-01T10:05:00Z,1,9.99,\n"
        "x1,8,,p2,view,1709287200,,,\n"
    )
    path = write(tmp_path, "events.csv", text)
    run("import_events", path)
    ids = set(Event.objects.values_list("event_id", flat=True))
    out, _ = run("import_events", path)
    assert "Imported 0 events; 3 duplicates" in out
    assert set(Event.objects.values_list("event_id", flat=True)) == ids
    assert Event.objects.count() == 3


def test_derived_ids_do_not_depend_on_the_file_format(tmp_path):
    run("import_events", write(tmp_path, "a.csv", f"{EVENTS_HEADER}\n,7,,p1,view,2024-03-01T10:00:00Z,,,\n"))
    out, _ = run(
        "import_events",
        write(
            tmp_path, "b.jsonl", '{"user_id": 7, "product_id": "p1", "event_type": "view", "timestamp": 1709287200}\n'
        ),
    )
    assert "Imported 0 events; 1 duplicates" in out


def test_repeated_ids_inside_one_file_count_as_duplicates(tmp_path):
    text = f"{EVENTS_HEADER}\nd1,7,,p1,view,2024-03-01T10:00:00Z,,,\nd1,7,,p1,view,2024-03-01T10:00:00Z,,,\n"
    out, _ = run("import_events", write(tmp_path, "twice.csv", text))
    assert "Imported 1 events; 1 duplicates" in out


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("type.csv", f"{EVENTS_HEADER}\n,7,,p1,teleport,2024-03-01T10:00:00Z,,,\n", ["line 2: event_type", "teleport"]),
        (
            "shopper.csv",
            f"{EVENTS_HEADER}\n,7,,p1,view,2024-03-01,,,\n,,,p1,view,2024-03-01,,,\n",
            ["line 3: user_id/visitor_id"],
        ),
        ("product.csv", f"{EVENTS_HEADER}\n,7,,,purchase,2024-03-01,,,\n", ["line 2: product_id", "purchase events"]),
        ("time.csv", f"{EVENTS_HEADER}\n,7,,p1,view,01/03/2024,,,\n", ["line 2: timestamp", "01/03/2024"]),
        ("no_time.csv", f"{EVENTS_HEADER}\n,7,,p1,view,,,,\n", ["line 2: timestamp: is required"]),
        ("future.csv", f"{EVENTS_HEADER}\n,7,,p1,view,2999-01-01T00:00:00Z,,,\n", ["line 2: timestamp", "future"]),
        ("quantity.csv", f"{EVENTS_HEADER}\n,7,,p1,view,2024-03-01,0,,\n", ["line 2: quantity"]),
        ("quantity2.csv", f"{EVENTS_HEADER}\n,7,,p1,view,2024-03-01,two,,\n", ["line 2: quantity", "'two'"]),
        ("value.csv", f"{EVENTS_HEADER}\n,7,,p1,view,2024-03-01,1,1;50,\n", ["line 2: value"]),
        ("search.csv", f"{EVENTS_HEADER}\n,7,,,search,2024-03-01,,,\n", ["line 2: query"]),
        ("header.csv", "user_id,product_id,event_type\n7,p1,view\n", ["missing required column", "timestamp"]),
        ("who.csv", "product_id,event_type,timestamp\np1,view,2024-03-01\n", ["user_id, visitor_id"]),
        ("empty.csv", "", ["empty"]),
        ("empty.jsonl", "", ["empty"]),
        # Blank lines are skipped but still counted, so the line number is the one an editor shows.
        ("gap.jsonl", '\n\n{"user_id": 7, "event_type": "view", "timestamp": 1709287200}\n', ["line 3: product_id"]),
        (
            "broken.jsonl",
            '{"user_id": "7", "product_id": "p1", "event_type": "view", "timestamp": 1709287200}\n{"user_id": 7\n',
            ["line 2: row: not valid JSON"],
        ),
        (
            "bool.jsonl",
            '{"user_id": "7", "product_id": "p1", "event_type": "view", "timestamp": true}\n',
            ["line 1: timestamp"],
        ),
    ],
)
def test_bad_events_are_refused_whole(tmp_path, name, text, expected):
    with pytest.raises(CommandError) as caught:
        run("import_events", write(tmp_path, name, text))
    message = str(caught.value)
    for part in expected:
        assert part in message
    assert "nothing was imported" in message
    assert Event.objects.count() == 0


def test_a_row_reports_every_bad_field_on_one_line(tmp_path):
    text = f"{EVENTS_HEADER}\n,,,p1,jump,never,0,x,\n"
    with pytest.raises(CommandError) as caught:
        run("import_events", write(tmp_path, "many.csv", text))
    lines = [line for line in str(caught.value).splitlines() if line.startswith("line ")]
    assert len(lines) == 1
    for field in ("event_type", "user_id/visitor_id", "timestamp", "quantity", "value"):
        assert f"{field}:" in lines[0]


def test_only_the_first_twenty_problems_are_listed(tmp_path):
    rows = "".join(f",7,,p{i},view,not-a-time,,,\n" for i in range(25))
    with pytest.raises(CommandError) as caught:
        run("import_events", write(tmp_path, "bad.csv", f"{EVENTS_HEADER}\n{rows}"))
    message = str(caught.value)
    assert "25 of 25 rows are invalid" in message
    assert "line 21: timestamp" in message and "line 22:" not in message
    assert "... and 5 more" in message


def test_events_skip_invalid_writes_exactly_the_good_rows(tmp_path):
    text = (
        f"{EVENTS_HEADER}\n"
        "g1,7,,p1,view,2024-03-01T10:00:00Z,,,\n"
        "b1,7,,p1,view,yesterday,,,\n"
        "g2,,abc,p2,add_to_cart,2024-03-01T10:01:00Z,3,30,\n"
        "b2,7,,p1,wander,2024-03-01T10:02:00Z,,,\n"
    )
    out, err = run("import_events", write(tmp_path, "mixed.csv", text), "--skip-invalid")
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["g1", "g2"]
    assert "Imported 2 events" in out and "2 invalid rows skipped" in out
    assert "line 3: timestamp" in err and "line 5: event_type" in err
    assert Event.objects.get(event_id="g2").quantity == 3


def test_gzipped_files_are_read(tmp_path):
    import gzip

    path = tmp_path / "events.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(f"{EVENTS_HEADER}\nz1,7,,p1,view,2024-03-01T10:00:00Z,,,\n")
    run("import_events", str(path))
    assert Event.objects.filter(event_id="z1").exists()


def test_text_with_tabs_and_backslashes_survives_copy(tmp_path):
    record = {"user_id": "7", "event_type": "search", "query": "tab\there \\ back\nline", "timestamp": 1709287200}
    run("import_events", write(tmp_path, "odd.jsonl", json.dumps(record) + "\n"))
    assert Event.objects.get().query == "tab\there \\ back\nline"


def test_copy_batches_count_duplicates_across_batches(tmp_path):
    rows = "".join(f"{eid},7,,p1,view,2024-03-01T10:0{i}:00Z,,,\n" for i, eid in enumerate("abcadb"))
    path = write(tmp_path, "batches.csv", f"{EVENTS_HEADER}\n{rows}")
    found, writer = importing.import_event_file(path, "csv", now=timezone.now(), batch_size=2)
    assert writer.use_copy  # the suite runs on PostgreSQL
    assert (found.valid, writer.inserted, writer.duplicates) == (6, 4, 2)
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["a", "b", "c", "d"]


def test_the_portable_writer_counts_like_copy():
    """The SQLite path (used by the demo) skips stored and repeated ids and counts them, like COPY does."""
    now = timezone.now()
    validate = importing.event_validator(now)
    rows = [
        validate(
            {"event_id": eid, "user_id": "7", "product_id": "p", "event_type": "view", "timestamp": "2024-01-01"}, 1
        )[0]
        for eid in ("a", "b", "a", "c")
    ]
    writer = importing.EventWriter(batch_size=2)
    writer.use_copy = False
    for values in rows:
        writer.add(values)
    writer.flush()
    assert (writer.inserted, writer.duplicates) == (3, 1)
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["a", "b", "c"]


# -- export_recommendations and the round trip --------------------------------------------------------------------


def _active_set_with_lists() -> RecommendationSet:
    rec_set = RecommendationSet.objects.create(status=RecommendationSet.Status.ACTIVE, activated_at=timezone.now())
    StoredList.objects.bulk_create(
        [
            StoredList(recommendation_set=rec_set, placement="for_you", subject="u:41",
                       items=[["c2", 0.9, "because:c1"], ["t1", 0.5, "because:c1"], ["b1", 0.1, "because:c1"]]),
            StoredList(recommendation_set=rec_set, placement="for_you",
                       subject="v:0123456789abcdef0123456789abcdef", items=[["c1", 0.7, "because:t1"]]),
            StoredList(recommendation_set=rec_set, placement="similar", subject="c1",
                       items=[["c2", 0.8, "also"], ["t1", 0.2, "also"]]),
            StoredList(recommendation_set=rec_set, placement="trending", subject="",
                       items=[["c1", 3.0, "trending"], ["b1", 1.0, "trending"]]),
            StoredList(recommendation_set=rec_set, placement="trending", subject="category:coffee",
                       items=[["c1", 3.0, "trending"]]),
        ]
    )  # fmt: skip
    # An older, retired set must not leak into the export.
    old = RecommendationSet.objects.create(status=RecommendationSet.Status.RETIRED)
    StoredList.objects.create(recommendation_set=old, placement="for_you", subject="u:99", items=[["c1", 1, "x"]])
    return rec_set


def test_round_trip_import_then_export(tmp_path):
    run("import_catalog", str(DATA / "catalog.csv"))
    run("import_events", str(DATA / "events.jsonl"))
    _active_set_with_lists()

    output = tmp_path / "for_you.csv"
    out, _ = run("export_recommendations", "--placement", "for_you", "--limit", "2", "--output", str(output))
    assert "Exported 3 rows from 2 for_you lists" in out
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [tuple(r.values()) for r in rows] == [
        ("41", "1", "c2", "0.9", "because:c1"),
        ("41", "2", "t1", "0.5", "because:c1"),
        ("visitor:0123456789abcdef0123456789abcdef", "1", "c1", "0.7", "because:t1"),
    ]
    assert list(rows[0]) == ["user_id", "rank", "product_id", "score", "reason"]
    # The exported ids are the imported catalog's and shoppers'.
    exported_products = {r["product_id"] for r in rows}
    assert exported_products <= set(ProductProfile.objects.values_list("product_id", flat=True))
    assert Event.objects.filter(user_id="41").exists()

    out, _ = run("export_recommendations", "--placement", "similar", "--format", "jsonl")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"anchor_product_id": "c1", "rank": 1, "product_id": "c2", "score": 0.8, "reason": "also"},
        {"anchor_product_id": "c1", "rank": 2, "product_id": "t1", "score": 0.2, "reason": "also"},
    ]

    out, err = run("export_recommendations", "--placement", "trending")
    assert list(csv.reader(io.StringIO(out))) == [
        ["category", "rank", "product_id", "score", "reason"],
        ["", "1", "c1", "3.0", "trending"],
        ["", "2", "b1", "1.0", "trending"],
        ["coffee", "1", "c1", "3.0", "trending"],
    ]
    assert "Exported 3 rows" in err  # the summary stays out of the data on stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--placement", "bestsellers"], "unknown placement"),
        (["--placement", "similar", "--format", "xml"], "unknown format"),
        (["--placement", "similar", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_export_refuses_bad_arguments(args, message):
    _active_set_with_lists()
    with pytest.raises(CommandError, match=message):
        run("export_recommendations", *args)


def test_export_without_an_active_set_says_what_to_do():
    with pytest.raises(CommandError, match="run precompute_recommendations"):
        run("export_recommendations", "--placement", "trending")


def test_sync_products_command_reports_counts():
    from tests.factories import make_product

    make_product(name="Kettle")
    ProductProfile.objects.create(product_id="gone", name="Deleted long ago")
    out, _ = run("sync_products")
    assert "Synced 1 product profile; 1 profile of a product no longer in the catalog was deactivated." in out
    assert ProductProfile.objects.get(product_id="gone").active is False
    assert ProductProfile.objects.get(name="Kettle").active is True
