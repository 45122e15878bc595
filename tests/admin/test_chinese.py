"""The admin in Simplified Chinese: the app's screens, labels and messages come from its catalogue when staff's
browser asks for Chinese (Django's own admin words come from Django's)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from recommendations.models import ColdStartRule

pytestmark = pytest.mark.django_db

CHINESE = {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}


def test_the_app_index_and_placements_list_are_in_chinese(staff_client):
    index = staff_client.get(reverse("admin:app_list", args=["recommendations"]), **CHINESE).content.decode()
    for words in ("商品推荐", "训练任务", "冷启动规则", "运营规则", "推荐位"):
        assert words in index
    assert "Training runs" not in index and "Cold start rules" not in index
    placements = staff_client.get(reverse("admin:recommendations_placement_changelist"), **CHINESE)
    html = placements.content.decode()
    assert ">预览</a>" in html and "分类 / 品牌" in html  # the preview link, a column's title


def test_a_rule_form_in_chinese_shows_translated_fieldsets_choices_and_errors(staff_client):
    add = reverse("admin:recommendations_coldstartrule_add")
    html = staff_client.get(add, **CHINESE).content.decode()
    assert "N 用于“事件少于 N 个”" in html  # a fieldset's description
    assert "事件少于 N 个的购物者" in html and "人工精选商品" in html  # the audience and source choices
    assert "该规则当前给出的商品" in html
    refused = staff_client.post(add, {"name": "few", "audience": "few_events", "source": "trending"}, **CHINESE)
    assert refused.status_code == 200 and not ColdStartRule.objects.exists()
    assert "请为该受众填写 N" in refused.content.decode()


def test_the_same_pages_stay_english_by_default(staff_client):
    html = staff_client.get(reverse("admin:recommendations_coldstartrule_add")).content.decode()
    assert "Shoppers with fewer than N events" in html and "事件" not in html
