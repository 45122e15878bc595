"""What the app keeps about a shopper, erased (every entry point, then every table and cache key scanned) and
exported; deleting a user erases them too, and a failing erasure never fails the deletion."""

from __future__ import annotations

import itertools
import json
import re
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from recommendations import keys, privacy, serving, tracking
from recommendations.experiments import operations
from recommendations.models import (
    ConsentChoice,
    EmailConsent,
    ErasureRequest,
    Event,
    Experiment,
    ExperimentVariant,
    Flow,
    Message,
    RecommendationSet,
    StoredList,
)
from tests.factories import (
    active_lists,
    make_co_viewed_toys,
    make_small_shop,
    make_user,
    recommendations_with,
    staff_with,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop() -> dict[str, Any]:
    """Shoppers co-view a kite and a yo-yo; precomputed, so a refresh has a set to write into."""
    return make_co_viewed_toys()


WRITE_KEY = "k" * 32


def for_you_api(shopper: str) -> dict[str, Any]:
    response = Client().get(
        reverse("recommendations:recommendations", args=["for_you"]),
        {"shopper": shopper},
        HTTP_X_RECOMMENDATIONS_KEY=WRITE_KEY,
    )
    assert response.status_code == 200, response.content
    return response.json()


@override_settings(RECOMMENDATIONS=recommendations_with(WRITE_KEY=WRITE_KEY))
def test_deleting_a_user_deletes_what_the_app_keeps_about_them():
    shop = make_small_shop()
    user, other = make_user("leaving"), make_user("staying")
    me, them = f"u:{user.pk}", f"u:{other.pk}"
    merged = "a" * 32  # a visitor id that joined the account at login, then browsed logged out
    tracking.store_events(
        [
            tracking.build_event("view", user_id=str(user.pk), product_id=str(shop["Pan"].pk)),
            tracking.build_event("view", user_id=str(user.pk), visitor_id=merged, product_id=str(shop["Pot"].pk)),
            tracking.build_event("view", visitor_id=merged, product_id=str(shop["Wok"].pk)),
            tracking.build_event("view", user_id=str(other.pk), product_id=str(shop["Pan"].pk)),
        ]
    )
    personal = [(shop["Rake"], 0.9, f"because:{shop['Pan'].pk}"), (shop["Hoe"], 0.8, f"because:{shop['Pan'].pk}")]
    active = active_lists(for_you={me: personal, them: personal, f"v:{merged}": personal})
    StoredList.objects.create(recommendation_set=active, placement="for_you@run7", subject=me, items=[])
    before = for_you_api(me)  # cached now
    assert {i["reason"] for i in before["items"][:2]} == {f"because:{shop['Pan'].pk}"}
    assert "Because you looked at" in before["items"][0]["reason_text"]

    user.delete()

    assert not Event.objects.filter(user_id=str(user.pk)).exists()
    assert not Event.objects.filter(shopper__in=[me, f"v:{merged}"]).exists()
    assert not Event.objects.filter(visitor_id=merged).exists()
    assert not StoredList.objects.filter(subject__in=[me, f"v:{merged}"]).exists()
    after = for_you_api(me)
    assert not [i for i in after["items"] if i["reason"].startswith("because:")], after
    assert "Because you looked at" not in str(after)
    block = serving.recommend("for_you", shopper=me)
    assert not [i for i in block.items if i.reason.startswith("because:")]
    # Someone else's data is theirs to keep.
    assert Event.objects.filter(user_id=str(other.pk)).count() == 1
    assert StoredList.objects.filter(subject=them).exists()
    assert for_you_api(them)["items"][0]["reason"] == f"because:{shop['Pan'].pk}"


def test_a_failing_erasure_never_fails_the_user_deletion(monkeypatch, caplog):
    user = make_user("leaving")

    def broken(user_id: str) -> None:
        raise RuntimeError("cache down")

    monkeypatch.setattr(privacy.erasure, "erase_user", broken)
    user.delete()
    assert "could not erase" in caplog.text


# --- erase and export: every entry point, then a scan of every table and cache key ------------------------------


USER_PK = 1_987_654_321  # distinctive, so a scan for it finds nothing by accident
VISITOR = "5eed" + "c0ffee" * 4 + "facade"  # 32 hex: browsed, then logged in (merged into the user)
LONE_VISITOR = "be" * 16  # a visitor erased by its own id


def _other_rows() -> dict[str, int]:
    """What the other shoppers have: their events, lists and cached keys."""
    return {
        "events": Event.objects.exclude(user_id=str(USER_PK)).exclude(visitor_id__in=[VISITOR, LONE_VISITOR]).count(),
        "lists": StoredList.objects.exclude(subject__in=[f"u:{USER_PK}", f"v:{VISITOR}", f"v:{LONE_VISITOR}"]).count(),
        "email": Message.objects.exclude(user_id=str(USER_PK)).count()
        + EmailConsent.objects.exclude(user_id=str(USER_PK)).count(),
        "keys": len(
            [
                k
                for k in _redis_keys()
                if not any(i in k for i in (str(USER_PK), VISITOR, LONE_VISITOR, "write-key"))  # the API's own bucket
            ]
        ),
    }


def _redis_keys() -> list[str]:
    client = caches["default"]._cache.get_client(None)
    return [k.decode() for k in client.scan_iter(count=1000)]


def _where_the_ids_are(ids: list[str]) -> list[str]:
    """Every column of every table of the app (cast to text, LIKE) and every cache key and value holding an id."""
    found = []
    with connection.cursor() as cursor:
        for model in apps.get_app_config("recommendations").get_models():
            table = connection.ops.quote_name(model._meta.db_table)
            for field in model._meta.concrete_fields:
                column = connection.ops.quote_name(field.column)
                for value in ids:
                    cursor.execute(f"SELECT count(*) FROM {table} WHERE CAST({column} AS text) LIKE %s", [f"%{value}%"])
                    if cursor.fetchone()[0]:
                        found.append(f"{model.__name__}.{field.name} holds {value}")
    client = caches["default"]._cache.get_client(None)
    for key in client.scan_iter(count=1000):
        blob = client.get(key) or b""
        for value in ids:
            if value.encode() in key or value.encode() in blob:
                found.append(f"cache key {key!r} holds {value}")
    return found


@pytest.fixture
def shopper(shop: dict[str, Any]) -> dict[str, Any]:
    """A shopper with events of every type (a visitor merged into their account, impressions, clicks and an
    attributed purchase), lists in two sets (one an experiment arm's), an experiment running on for_you, cached
    blocks, a queued refresh and API throttle counters; and two other shoppers, one of whom clicked a link to a
    block shown to ours."""
    user = make_user("erased", id=USER_PK)
    kite, yoyo, ball = (str(shop[name].pk) for name in ("Kite", "Yo-yo", "Ball"))
    me, merged, lone = str(USER_PK), VISITOR, LONE_VISITOR
    experiment = Experiment.objects.create(name="arms", placement="for_you")
    ExperimentVariant.objects.create(experiment=experiment, name="A", share=1, strategy="model")
    ExperimentVariant.objects.create(experiment=experiment, name="B", share=1, strategy="trending")
    operations.start(experiment.pk)
    events = [
        tracking.build_event("view", visitor_id=merged, product_id=kite),
        tracking.build_event("view", user_id=me, visitor_id=merged, product_id=kite),
        tracking.build_event("search", user_id=me, query="kite string"),
        tracking.build_event("favorite", user_id=me, product_id=yoyo),
        tracking.build_event("add_to_cart", user_id=me, product_id=yoyo),
        tracking.build_event("remove_from_cart", user_id=me, product_id=yoyo),
        tracking.build_event(
            "impression", user_id=me, placement="for_you", recommendation_id="r" * 32, context={"items": [ball]}
        ),
        tracking.build_event("click", user_id=me, product_id=ball, placement="for_you", recommendation_id="r" * 32),
        tracking.build_event("view", visitor_id=lone, product_id=ball),
        # Someone else followed a shared link to the block shown to ours: the pointer goes, their click stays.
        tracking.build_event("click", visitor_id="0" * 31 + "9", product_id=ball, recommendation_id="r" * 32),
        tracking.build_event("view", user_id="7", product_id=kite),
    ]
    tracking.store_events(events)
    purchase = tracking.build_event("purchase", user_id=me, product_id=ball, value="9.50")
    tracking.attribute([purchase])  # to the click, as record_event and the ingest API do
    tracking.store_events([purchase])
    assert Event.objects.get(user_id=me, event_type="purchase").recommendation_id == "r" * 32
    active = RecommendationSet.objects.get(status="active")
    retired = RecommendationSet.objects.create(status="retired")
    for subject in (f"u:{me}", f"v:{merged}", f"v:{lone}", "u:7"):
        StoredList.objects.create(
            recommendation_set=retired, placement="for_you", subject=subject, items=[[kite, 1, "x"]]
        )
        StoredList.objects.update_or_create(
            recommendation_set=active, placement="for_you", subject=subject, defaults={"items": [[ball, 1, "trending"]]}
        )
    StoredList.objects.create(recommendation_set=active, placement="for_you@run7", subject=f"u:{me}", items=[])
    for who in (f"u:{me}", f"v:{lone}", "u:7"):
        serving.recommend("for_you", shopper=who)
        serving.recommend("similar", shopper=who, product_id=kite)
    caches["default"].set(keys.refresh_pending(f"u:{me}"), 1, 60)  # what a queued refresh's debounce leaves
    # E-mail: a sent weekly message and a marketing opt-in each, for ours and another; ours also said yes to
    # personalisation on the account (kept under a keyed hash, so it stays and names nobody).
    flow = Flow.objects.create(name="Weekly", slug="weekly", trigger="weekly_picks")
    for who in (me, "7"):
        Message.objects.create(
            key=f"{flow.pk}:{who}:2026-W49", flow=flow, user_id=who, period="2026-W49", status="sent", products=[kite]
        )
        EmailConsent.objects.create(user_id=who, opted_in=True)
    privacy.set_account_choice(me, True)
    browser = Client()
    browser.force_login(user)
    assert browser.get(reverse("recommendations:recommendations", args=["trending"])).status_code == 200
    ids = [me, merged, lone]
    assert len(_where_the_ids_are(ids)) > 10  # the scan finds them before: events, lists, blocks, versions, throttle
    return {"user": user, "ids": ids, "others": _other_rows()}


def _erase_through(entry: str, user_id: str, visitors: list[str], tmp_path: Any) -> dict[str, Any]:
    if entry == "python":
        return privacy.erase([user_id], visitors, requested_by="test").counts
    if entry == "command":
        ids = tmp_path / "ids.txt"
        ids.write_text("# one a line\n" + "".join(f"v:{v}\n" for v in visitors))
        out = StringIO()
        call_command("erase_shopper", "--user", user_id, "--file", str(ids), "--batch-size", "2", stdout=out)
        assert out.getvalue().count("\n") == 1 and "Erased 2" in out.getvalue()
        return ErasureRequest.objects.get().counts
    if entry == "admin":
        client, _staff = staff_with(Client(), "add_erasurerequest", "view_erasurerequest")
        url = reverse("admin:recommendations_erasurerequest_add")
        assert client.get(url).status_code == 200
        response = client.post(url, {"user_ids": user_id, "visitor_ids": ",".join(visitors)})
        assert response.status_code == 200
        assert "Erasure #" in response.content.decode()
        return ErasureRequest.objects.get().counts
    response = Client().post(
        reverse("recommendations:privacy_erase"),
        {"user_ids": [user_id], "visitor_ids": visitors},
        content_type="application/json",
        HTTP_X_RECOMMENDATIONS_KEY=WRITE_KEY,
    )
    assert response.status_code == 200, response.content
    return response.json()["counts"]


@pytest.mark.parametrize("entry", ["python", "command", "admin", "api"])
@override_settings(RECOMMENDATIONS=recommendations_with(WRITE_KEY=WRITE_KEY))
def test_an_erasure_leaves_no_trace_of_the_shopper_in_any_table_or_cache_key(entry, shopper, tmp_path):
    counts = _erase_through(entry, str(USER_PK), [LONE_VISITOR], tmp_path)

    assert counts["events"] == 11  # ten of theirs (the merged visitor's, the API page's impression) and the lone one
    assert counts["events_by_type"]["impression"] == 2 and counts["events_by_type"]["click"] == 1
    assert (
        counts["stored_lists"] == 7 and counts["attribution_unlinked"] == 1 and counts["linked_visitors"] == 2
    )  # the merged one and the API browser's cookie
    assert counts["cache_keys"] >= 6
    assert (counts["email_messages"], counts["email_consents"]) == (1, 1)
    assert _where_the_ids_are(shopper["ids"]) == []
    assert ConsentChoice.objects.get().personalised is True  # their answer stays, under its hash
    assert _other_rows() == shopper["others"]
    assert Event.objects.get(visitor_id="0" * 31 + "9").recommendation_id == ""
    record = ErasureRequest.objects.get()
    assert record.subjects == 2 and record.finished_at is not None
    assert record.subject_hashes == sorted(
        [privacy.subject_hash("user", str(USER_PK)), privacy.subject_hash("visitor", LONE_VISITOR)]
    )
    # Idempotent: a second erasure finds nothing and says so.
    again = privacy.erase([USER_PK], [LONE_VISITOR]).counts
    assert (again["events"], again["stored_lists"], again["cache_keys"]) == (0, 0, 0)


def test_erasure_deletes_in_batches_and_reports_progress(shopper):
    steps = []
    counts = privacy.erase(
        [USER_PK], batch_size=3, progress=lambda stage, done, total: steps.append((done, total))
    ).counts
    assert counts["events"] == 10
    assert steps == [(0, 10), (3, 10), (6, 10), (9, 10), (10, 10)]


@override_settings(RECOMMENDATIONS=recommendations_with(WRITE_KEY=WRITE_KEY))
def test_export_holds_every_event_and_list_of_the_shopper_and_round_trips(shopper, tmp_path):
    document = privacy.export([USER_PK], [LONE_VISITOR])
    assert document["format"] == privacy.FORMAT and document["version"] == 1
    assert VISITOR in document["subjects"]["linked_visitor_ids"]
    assert {e["event_type"] for e in document["events"]} == {
        "view",
        "search",
        "favorite",
        "add_to_cart",
        "remove_from_cart",
        "impression",
        "click",
        "purchase",
    }
    assert document["counts"] == {"events": 11, "stored_lists": 7, "email_messages": 1, "email_consents": 1}
    assert [(m["flow"], m["status"], m["period"]) for m in document["email_messages"]] == [
        ("weekly", "sent", "2026-W49")
    ]
    assert document["email_consents"][0]["user_id"] == str(USER_PK) and document["email_consents"][0]["opted_in"]
    assert document["personalisation_choices"] == {str(USER_PK): True}
    assert {(row["placement"], row["subject"]) for row in document["stored_lists"]} >= {
        ("for_you@run7", f"u:{USER_PK}"),
        ("for_you", f"v:{LONE_VISITOR}"),
    }
    assert "u:7" not in json.dumps(document)
    # The same document through the command (a file) and the API, and it reads back as the rows stored.
    out = tmp_path / "export.json"
    call_command("export_shopper", "--user", str(USER_PK), "--visitor", LONE_VISITOR, "--output", str(out))
    from_file = json.loads(out.read_text())
    response = Client().post(
        reverse("recommendations:privacy_export"),
        {"user_ids": [str(USER_PK)], "visitor_ids": [LONE_VISITOR]},
        content_type="application/json",
        HTTP_X_RECOMMENDATIONS_KEY=WRITE_KEY,
    )
    assert response.status_code == 200
    for other in (from_file, response.json()):
        assert other["events"] == document["events"] and other["stored_lists"] == document["stored_lists"]
    stored = {e.event_id: e for e in Event.objects.filter(event_id__in=[e["event_id"] for e in document["events"]])}
    assert len(stored) == 11
    purchase = next(e for e in document["events"] if e["event_type"] == "purchase")
    assert purchase["value"] == "9.50" and purchase["recommendation_id"] == "r" * 32
    assert purchase["occurred_at"] == stored[purchase["event_id"]].occurred_at.isoformat()


@override_settings(RECOMMENDATIONS=recommendations_with(WRITE_KEY=WRITE_KEY))
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_ids"),
        ({"user_ids": "42"}, "user_ids"),
        ({"user_ids": ["42"], "visitor_ids": [""]}, "visitor_ids"),
        ({"visitor_ids": [{"id": 1}]}, "visitor_ids"),
        ({"users": ["42"]}, "users"),
    ],
)
def test_the_api_refuses_bad_input_naming_the_field(body, field):
    for name in ("privacy_erase", "privacy_export"):
        response = Client().post(
            reverse(f"recommendations:{name}"),
            body,
            content_type="application/json",
            HTTP_X_RECOMMENDATIONS_KEY=WRITE_KEY,
        )
        assert response.status_code == 400, response.content
        assert response.json()["errors"][0]["field"] == field
    assert not ErasureRequest.objects.exists()


@override_settings(RECOMMENDATIONS=recommendations_with(WRITE_KEY=WRITE_KEY))
def test_the_api_answers_only_the_write_key(admin_user):
    url = reverse("recommendations:privacy_erase")
    assert Client().post(url, {"user_ids": ["1"]}, content_type="application/json").status_code == 403
    staff = Client()
    staff.force_login(admin_user)
    assert staff.post(url, {"user_ids": ["1"]}, content_type="application/json").status_code == 403
    wrong = Client().post(
        url, {"user_ids": ["1"]}, content_type="application/json", HTTP_X_RECOMMENDATIONS_KEY="x" * 32
    )
    assert wrong.status_code == 403
    assert not ErasureRequest.objects.exists()


def test_the_commands_refuse_bad_input_in_one_line(tmp_path):
    with pytest.raises(CommandError, match="Name at least one shopper"):
        call_command("erase_shopper")
    bad = tmp_path / "ids.txt"
    bad.write_text("u:1\n42\n")
    with pytest.raises(CommandError, match=re.escape(f"{bad} line 2")):
        call_command("erase_shopper", "--file", str(bad))
    with pytest.raises(CommandError, match="batch-size"):
        call_command("erase_shopper", "--user", "1", "--batch-size", "0")
    with pytest.raises(CommandError, match="visitor_ids"):
        call_command("export_shopper", "--visitor", "x" * 65)
    assert not ErasureRequest.objects.exists()


def test_the_events_action_asks_before_erasing_and_the_erase_page_offers_a_retrain(shopper):
    client, _staff = staff_with(Client(), "add_erasurerequest", "view_erasurerequest", "view_event", "add_trainingrun")
    log = client.get(reverse("admin:recommendations_erasurerequest_changelist")).content.decode()
    assert reverse("admin:recommendations_erasurerequest_add") in log and "Export a shopper" in log
    picked = Event.objects.filter(visitor_id=LONE_VISITOR).values_list("pk", flat=True)
    response = client.post(
        reverse("admin:recommendations_event_changelist"),
        {"action": "erase_shoppers", "_selected_action": list(picked)},
    )
    assert response.status_code == 200
    assert LONE_VISITOR in response.content.decode()  # the form, filled in; nothing erased yet
    assert Event.objects.filter(visitor_id=LONE_VISITOR).exists()
    response = client.post(reverse("admin:recommendations_erasurerequest_add"), {"visitor_ids": LONE_VISITOR})
    page = response.content.decode()
    assert reverse("admin:recommendations_trainingrun_retrain_now") in page
    assert not Event.objects.filter(visitor_id=LONE_VISITOR).exists()
    assert ErasureRequest.objects.get().requested_by == _staff.get_username()
    export = client.post(reverse("admin:recommendations_erasurerequest_export"), {"user_ids": str(USER_PK)})
    assert export["Content-Disposition"].startswith("attachment")
    assert json.loads(export.content)["counts"]["events"] == 10


def test_without_the_permission_there_is_no_erase_page_and_no_action(shopper):
    client, _staff = staff_with(Client(), "view_erasurerequest", "view_event")
    assert client.get(reverse("admin:recommendations_erasurerequest_add")).status_code == 403
    assert client.post(reverse("admin:recommendations_erasurerequest_export"), {"user_ids": "1"}).status_code == 403
    page = client.get(reverse("admin:recommendations_event_changelist")).content.decode()
    assert "erase_shoppers" not in page


# --- many shoppers at once: the batched path, and the user admin's action -------------------------------------------


def _many_shoppers() -> dict[str, Any]:
    """24 shoppers (users and visitors) with events, lists in two sets and cached keys, wired so that the erasure's
    pieces cut between a user and the browser merged into their account, and blocks shown to one shopper are pointed
    at from other shoppers' rows, kept and erased alike."""
    users = [f"7{i:03d}" for i in range(12)]
    visitors = [f"{i:02d}" + "ab" * 15 for i in range(12)]
    merged = {users[i]: f"{i:02d}" + "cd" * 15 for i in (0, 5, 11)}  # browsed, then logged in; one logs out again
    rows: list[Event] = []

    def event(kind: str, user: str = "", visitor: str = "", rec: str = "", **extra: Any) -> str:
        event_id = f"many-{len(rows)}"
        key = f"u:{user}" if user else f"v:{visitor}"
        rows.append(
            Event(
                event_id=event_id,
                event_type=kind,
                user_id=user,
                visitor_id=visitor,
                shopper=key,
                product_id="" if kind == "impression" else "17",
                recommendation_id=rec,
                placement="for_you" if rec else "",
                **extra,
            )
        )
        return event_id

    for n, user in enumerate(users):
        event("view", user=user)
        event("impression", user=user, rec=f"rec-u{n}")
        event("click", user=user, rec=f"rec-u{n}")
        event("purchase", user=user, rec=f"rec-u{n}", context={"attributed": "click"})
    for n, visitor in enumerate(visitors):
        event("view", visitor=visitor)
        event("impression", visitor=visitor, rec=f"rec-v{n}")
    for user, visitor in merged.items():
        event("view", user=user, visitor=visitor)
        event("view", user=user, visitor=visitor)
    event("search", visitor=merged[users[5]], query="kite")  # after logging out again
    # A named visitor's browsing merged into an account that stays: those rows go, the account's own stay.
    event("view", user=users[1], visitor=visitors[2])
    # Links to blocks: kept -> erased, erased -> erased (another piece), kept -> kept, erased -> kept.
    event("click", user=users[1], rec="rec-u0")
    event("click", visitor=visitors[3], rec="rec-v10")
    event("click", user=users[10], rec="rec-v0")
    event("click", user=users[3], rec="rec-u1")
    event("click", user=users[8], rec="rec-u3")
    Event.objects.bulk_create(rows)
    erased_users, erased_visitors = users[0::2], visitors[0::2]  # even positions: half of each kind
    gone_visitors = {*erased_visitors, *(merged[u] for u in erased_users if u in merged)}
    gone_keys = {f"u:{u}" for u in erased_users} | {f"v:{v}" for v in gone_visitors}
    all_keys = {e.shopper for e in rows}
    active = RecommendationSet.objects.create(status="active")
    retired = RecommendationSet.objects.create(status="retired")
    for key in sorted(all_keys):
        StoredList.objects.create(recommendation_set=active, placement="for_you", subject=key, items=[["17", 1, "x"]])
        StoredList.objects.create(recommendation_set=retired, placement="for_you", subject=key, items=[])
    StoredList.objects.create(recommendation_set=active, placement="for_you@run3", subject=f"u:{users[0]}", items=[])
    StoredList.objects.create(recommendation_set=active, placement="similar", subject="17", items=[])
    owner = {}  # every per-shopper key written, to whom it belongs
    for key in sorted(all_keys):
        owner[keys.block(key, "for_you", 8)] = owner[keys.shopper_version(key)] = key
        owner[keys.THROTTLE % {"scope": "recommendations_read", "ident": key} + ":60"] = key
    owner[keys.refresh_pending(f"u:{users[0]}")] = f"u:{users[0]}"
    caches["default"].set_many({**dict.fromkeys(owner, 1), keys.ACTIVE_SET: active.pk}, 300)
    gone = {
        e.event_id for e in rows if e.shopper in gone_keys or e.user_id in erased_users or e.visitor_id in gone_visitors
    }
    gone_recs = {e.recommendation_id for e in rows if e.event_id in gone and e.recommendation_id}
    pointers = {e.event_id for e in rows if e.event_id not in gone and e.recommendation_id in gone_recs}
    return {
        "users": erased_users,
        "visitors": erased_visitors,
        "gone_keys": gone_keys,
        "gone": gone,
        "pointers": pointers,
        "events": {e.event_id: e.recommendation_id for e in rows},
        "lists": {(sl.recommendation_set_id, sl.placement, sl.subject) for sl in StoredList.objects.all()},
        "cache": _app_cache_keys(),
        "owner": owner,
    }


def _app_cache_keys() -> set[str]:
    """Every key in the default cache, as the app spells it (without the cache's own prefix)."""
    cache = caches["default"]
    head = cache.make_key("")
    if hasattr(cache, "_cache") and isinstance(cache._cache, dict):  # the local-memory cache
        names = list(cache._cache)
    else:
        names = [k.decode() for k in cache._cache.get_client(None).scan_iter(count=1000)]
    return {name[len(head) :] for name in names if name.startswith(head)}


def _check_many_erased(data: dict[str, Any], counts: dict[str, Any]) -> None:
    after = dict(Event.objects.values_list("event_id", "recommendation_id"))
    assert set(after) == set(data["events"]) - data["gone"]
    assert {e for e, rec in after.items() if rec != data["events"][e]} == data["pointers"]
    assert all(after[e] == "" for e in data["pointers"])
    lists = {(sl.recommendation_set_id, sl.placement, sl.subject) for sl in StoredList.objects.all()}
    assert lists == {entry for entry in data["lists"] if entry[2] not in data["gone_keys"]}
    assert _app_cache_keys() == {k for k in data["cache"] if data["owner"].get(k) not in data["gone_keys"]}
    assert (counts["events"], counts["attribution_unlinked"]) == (len(data["gone"]), len(data["pointers"]))
    assert sum(counts["events_by_type"].values()) == counts["events"]
    assert counts["stored_lists"] == len(data["lists"]) - len(lists)
    assert counts["cache_keys"] == len(data["cache"]) - len(_app_cache_keys())
    assert counts["linked_visitors"] == 1 and counts["shopper_keys"] == len(data["gone_keys"])


@pytest.mark.parametrize("cache_backend", ["redis", "locmem"])
def test_many_shoppers_are_erased_in_pieces_and_batches_exactly(monkeypatch, settings, cache_backend):
    if cache_backend == "locmem":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Pieces of three ids, batches of two events, lists four shoppers a statement, the cache walked once per family.
    monkeypatch.setattr(privacy.erasure, "IDS_PER_STATEMENT", 3)
    monkeypatch.setattr(privacy.erasure, "LIST_SUBJECTS_PER_STATEMENT", 4)
    monkeypatch.setattr(privacy.erasure, "FEW_SHOPPERS", 2)
    data = _many_shoppers()
    whole = set(
        Event.objects.filter(privacy.resolve(data["users"], data["visitors"]).events_filter()).values_list(
            "event_id", flat=True
        )
    )
    assert whole == data["gone"]  # the single filter selects what the pieces must add up to
    steps: list[tuple[str, int, int]] = []
    counts = privacy.erase(
        data["users"], data["visitors"], batch_size=2, progress=lambda *step: steps.append(step)
    ).counts

    _check_many_erased(data, counts)
    events = [(done, total) for stage, done, total in steps if stage == "events"]
    assert events[0][0] == 0 and events[-1] == (counts["events"], counts["events"])
    assert all(0 <= later[0] - earlier[0] <= 2 for earlier, later in itertools.pairwise(events))  # batches of two
    shoppers = len(data["gone_keys"])
    assert [s for s in steps if s[0] == "stored lists"][-1] == ("stored lists", shoppers, shoppers)
    again = privacy.erase(data["users"], data["visitors"]).counts
    assert (again["events"], again["stored_lists"], again["cache_keys"]) == (0, 0, 0)


def test_the_cache_key_index_agrees_with_the_patterns():
    """`keys.ShopperKeys` (one walk of the cache for many shoppers) names exactly what the per-shopper patterns match,
    for shoppers whose ids hold colons, glob characters, spaces or run long."""
    from fnmatch import fnmatchcase

    odd = ["u:1", "u:12", "v:" + "a" * 32, "u:a:b", "u:*x", "u:[1]", "u:x y", "u:" + "z" * 90, "v::", "u:1:"]
    candidates = [
        name
        for shopper in odd
        for name in (
            keys.block(shopper, "for_you", 8),
            keys.THROTTLE % {"scope": "recommendations_read", "ident": shopper} + ":60",
            keys.THROTTLE % {"scope": "a:b", "ident": shopper} + ":1",
            f"throttle::{shopper}:",
            keys.shopper_version(shopper),
            keys.refresh_pending(shopper),
        )
    ] + ["throttle:recommendations_read:write-key:60", "recommendations:block:", keys.ACTIVE_SET]
    for shopper in odd:
        exact, patterns = keys.shopper_key_patterns(shopper)
        index = keys.ShopperKeys([shopper])
        for name in candidates:
            expected = name in exact or any(fnmatchcase(name, p) for p in patterns)
            assert (name in index) is expected, (shopper, name)
        assert all(any(fnmatchcase(f"{p[:-1]}x", f) for f in keys.ShopperKeys.FAMILIES) for p in patterns)


def test_subject_hashes_are_the_subject_hash_of_each_id():
    ids = ["42", "é", "v" * 64]
    assert privacy.subject_hashes("user", ids) == [privacy.subject_hash("user", i) for i in ids]


def test_the_user_admin_erases_recommendation_data_after_a_confirmation(shopper):
    client, staff = staff_with(
        Client(), "view_user", "change_user", "add_erasurerequest", apps=("auth", "recommendations")
    )
    changelist = reverse("admin:auth_user_changelist")
    assert "erase_recommendation_data" in client.get(changelist).content.decode()
    others = shopper["others"]
    picked = {"action": "erase_recommendation_data", "_selected_action": [str(USER_PK)]}

    page = client.post(changelist, picked)
    assert page.status_code == 200
    text = page.content.decode()
    assert "erased" in text and 'name="post" value="yes"' in text  # the user listed; nothing erased yet
    assert "10 events" in text and "2 browsers" in text
    assert Event.objects.filter(user_id=str(USER_PK)).exists() and not ErasureRequest.objects.exists()

    done = client.post(changelist, {**picked, "post": "yes"})
    assert done.status_code == 302
    record = ErasureRequest.objects.get()
    assert (record.via, record.requested_by, record.subjects) == ("admin", staff.get_username(), 1)
    assert record.counts["events"] == 10 and record.subject_hashes == [privacy.subject_hash("user", str(USER_PK))]
    assert _where_the_ids_are([str(USER_PK), VISITOR]) == []
    assert _other_rows() == others
    assert Event.objects.filter(visitor_id=LONE_VISITOR).exists()  # not theirs
    assert shopper["user"].__class__.objects.filter(pk=USER_PK).exists()  # the account stays
    from django.contrib.admin.models import LogEntry

    assert LogEntry.objects.filter(user=staff, object_id=str(record.pk)).exists()


def test_without_the_permission_the_user_admin_offers_no_erase_action(shopper):
    client, _staff = staff_with(Client(), "view_user", "change_user", apps=("auth",))
    changelist = reverse("admin:auth_user_changelist")
    assert "erase_recommendation_data" not in client.get(changelist).content.decode()
    before = Event.objects.filter(user_id=str(USER_PK)).count()
    client.post(changelist, {"action": "erase_recommendation_data", "_selected_action": [str(USER_PK)], "post": "yes"})
    assert Event.objects.filter(user_id=str(USER_PK)).count() == before > 0 and not ErasureRequest.objects.exists()


def test_the_erase_action_joins_a_user_admins_own_actions_once():
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.contrib.auth.admin import UserAdmin
    from django.test import RequestFactory

    from recommendations.admin import EraseRecommendationDataMixin, attach_erase_action

    assert isinstance(admin.site.get_model_admin(get_user_model()), EraseRecommendationDataMixin)  # the demo's

    @admin.action(description="Mark as VIP")
    def mark_vip(model_admin: Any, request: Any, queryset: Any) -> None:
        return None

    class ShopUserAdmin(UserAdmin):
        actions = [mark_vip]

    site = admin.AdminSite(name="host")
    site.register(get_user_model(), ShopUserAdmin)
    assert attach_erase_action(site) and attach_erase_action(site)
    model_admin = site.get_model_admin(get_user_model())
    assert type(model_admin).__mro__.count(EraseRecommendationDataMixin) == 1
    request = RequestFactory().get("/")
    request.user = make_user(is_superuser=True, is_staff=True)
    assert {"mark_vip", "erase_recommendation_data", "delete_selected"} <= set(model_admin.get_actions(request))
    request.user = make_user(is_staff=True)
    assert "erase_recommendation_data" not in model_admin.get_actions(request)
    assert not attach_erase_action(admin.AdminSite(name="empty"))
