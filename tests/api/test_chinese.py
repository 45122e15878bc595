"""The API answers in the language the client asks for: refusals name the field in Chinese, and a block's title and
reasons are worded in Chinese; without Accept-Language it stays English."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import active_lists, make_small_shop

pytestmark = pytest.mark.django_db

CHINESE = {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}


def test_a_bad_parameter_is_a_400_in_chinese_when_asked_for(client: Client):
    url = reverse("recommendations:recommendations", args=["trending"])
    refused = client.get(url, {"limit": "abc"}, **CHINESE)
    assert refused.status_code == 400
    assert refused.json()["errors"] == [{"field": "limit", "message": "必须是 1 到 50 之间的整数"}]
    english = client.get(url, {"limit": "abc"}).json()["errors"]
    assert english == [{"field": "limit", "message": "must be a whole number from 1 to 50"}]


def test_an_ingested_event_without_its_type_is_refused_in_chinese(client: Client):
    refused = client.post(
        reverse("recommendations:ingest"),
        data=json.dumps({"events": [{"product_id": "1"}]}),
        content_type="application/json",
        **CHINESE,
    )
    assert refused.status_code == 400
    assert {"index": 0, "field": "event_type", "message": "此字段为必填项"} in refused.json()["errors"]


def test_a_block_is_worded_in_chinese(client: Client):
    products = make_small_shop()
    active_lists(trending={"": [(products["Hose"], 0.9, "trending"), (products["Hoe"], 0.8, "trending")]})
    url = reverse("recommendations:recommendations", args=["trending"])
    body = client.get(url, {"limit": 2}, **CHINESE).json()
    assert body["title"] == "当下热门"
    assert [item["reason_text"] for item in body["items"]] == ["当下热门", "当下热门"]
    assert client.get(url, {"limit": 2}).json()["title"] == "Trending now"
