"""Recommendation sets (activate one to roll back or forward) and their stored lists, read-only.

Activating a set is permission-checked and written to the admin log (LogEntry) under the user who did it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations.admin.base import ReadOnlyAdmin
from recommendations.models import RecommendationSet, StoredList

logger = logging.getLogger(__name__)


def placement_counts(set_ids: list[int]) -> dict[int, dict[str, int]]:
    """{set id: {placement: lists}} for these sets, in one GROUP BY query (the set, placement, subject index serves
    it: COUNT(*) needs no other column).

    Every placement a set holds, whatever its name (bought_together, buy_again, an arm's "for_you@run<id>"), so a
    new kind of list shows up here without an admin change.
    """
    counts: dict[int, dict[str, int]] = {set_id: {} for set_id in set_ids}
    rows = (
        StoredList.objects.filter(recommendation_set_id__in=set_ids)
        .values_list("recommendation_set_id", "placement")
        .annotate(n=Count("*"))
        .order_by("recommendation_set_id", "placement")
    )
    for set_id, placement, n in rows:
        counts[set_id][placement] = n
    return counts


class RecommendationSetChangeList(ChangeList):
    """Counts the page's lists per placement once for the whole page, after pagination picked the sets."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Evaluating the page here fills the queryset's cache, so the template reuses these very objects.
        sets = list(self.result_list)
        counts = placement_counts([s.pk for s in sets])
        for recommendation_set in sets:
            recommendation_set.placement_counts = counts[recommendation_set.pk]


@admin.register(RecommendationSet)
class RecommendationSetAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "status", "algorithm", "created_at", "activated_at", "list_counts")
    list_filter = ("status", "algorithm")
    ordering = ("-pk",)
    readonly_fields = ("status", "algorithm", "created_at", "activated_at", "list_counts", "stats")
    actions = ["activate_set"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return RecommendationSetChangeList

    @admin.display(description=gettext_lazy("Lists per placement"))
    def list_counts(self, obj: RecommendationSet) -> str:
        # The changelist counted its page already; the change page counts its one set.
        counts = getattr(obj, "placement_counts", None)
        if counts is None:
            counts = placement_counts([obj.pk])[obj.pk]
        if not counts:
            return _("no lists")
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", sorted(counts.items())),
        )

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.change_recommendationset")

    @admin.action(description=gettext_lazy("Activate this set (roll back or forward to it)"), permissions=["activate"])
    def activate_set(self, request: HttpRequest, queryset: QuerySet) -> None:
        from recommendations.lists.precompute import activate_set

        if queryset.count() != 1:
            self.message_user(request, _("Select exactly one set to activate."), messages.ERROR)
            return
        chosen = queryset.get()
        before = RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE).values_list("pk", flat=True)
        was = f"set #{before.first()}" if before.exists() else "no set"
        try:
            activate_set(chosen.pk)
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        logger.info("%s activated recommendation set #%s (before: %s)", request.user.get_username(), chosen.pk, was)
        self.log_change(request, chosen, f"Activated this set (before: {was}).")
        self.message_user(
            request, _("Set #%(pk)s is now active; shoppers see its lists.") % {"pk": chosen.pk}, messages.SUCCESS
        )


@admin.register(StoredList)
class StoredListAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "recommendation_set", "placement", "subject", "length")
    list_filter = ("placement",)
    search_fields = ("=subject",)
    list_select_related = ("recommendation_set",)
    show_full_result_count = False
    ordering = ("-recommendation_set_id", "placement", "subject")

    @admin.display(description=gettext_lazy("items"))
    def length(self, obj: StoredList) -> int:
        return len(obj.items or [])
