"""The events screen: what tracking stored, to inspect and search; never written from a form."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from recommendations.admin.base import ReadOnlyAdmin
from recommendations.admin.privacy import erase_shoppers
from recommendations.models import Event


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = (
        "occurred_at",
        "event_type",
        "shopper",
        "product_id",
        "quantity",
        "placement",
        "recommendation_id",
        "variant",
    )
    list_filter = ("event_type", "placement")
    search_fields = ("=shopper", "=product_id", "=user_id", "=visitor_id", "=event_id", "=recommendation_id")
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at",)
    # Counting millions of events on every page load is the slow part of a big changelist.
    show_full_result_count = False
    list_per_page = 50
    actions = [erase_shoppers]

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.add_erasurerequest")
