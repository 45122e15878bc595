"""Admin for the recommendations app: events and profiles to inspect, sets to roll back, precomputes to run.

Events, profiles and stored lists are written by the engine and tracking, so they are read-only here.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from recommendations import catalog
from recommendations.models import Event, PrecomputeRun, ProductProfile, RecommendationSet, StoredList

PLACEMENTS = ("for_you", "similar", "trending")


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: the rows come from the engine and tracking, never from a form."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("occurred_at", "event_type", "shopper", "product_id", "quantity", "placement")
    list_filter = ("event_type",)
    search_fields = ("=shopper", "=product_id", "=user_id", "=visitor_id", "=event_id")
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at",)
    # Counting millions of events on every page load is the slow part of a big changelist.
    show_full_result_count = False
    list_per_page = 50


@admin.register(ProductProfile)
class ProductProfileAdmin(ReadOnlyAdmin):
    list_display = ("product_id", "name", "category", "brand", "price", "in_stock", "active", "sales_count")
    list_filter = ("active", "in_stock")
    search_fields = ("=product_id", "name", "brand", "category")
    ordering = ("product_id",)
    actions = ["sync_from_catalog"]

    def has_sync_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.change_productprofile")

    @admin.action(description="Sync all profiles from the catalog now", permissions=["sync"])
    def sync_from_catalog(self, request: HttpRequest, queryset: QuerySet) -> None:
        result = catalog.sync_products()
        self.message_user(
            request,
            f"Synced {result['synced']} products; {result['deactivated']} profiles deactivated.",
            messages.SUCCESS,
        )


def _list_counts(queryset: QuerySet) -> QuerySet:
    return queryset.annotate(
        **{f"{placement}_lists": Count("lists", filter=Q(lists__placement=placement)) for placement in PLACEMENTS}
    )


@admin.register(RecommendationSet)
class RecommendationSetAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "status", "algorithm", "created_at", "activated_at", "for_you", "similar", "trending")
    list_filter = ("status", "algorithm")
    ordering = ("-pk",)
    readonly_fields = ("status", "algorithm", "created_at", "activated_at", "list_counts", "stats")
    actions = ["activate_set"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return _list_counts(super().get_queryset(request))

    @admin.display(description="for_you lists", ordering="for_you_lists")
    def for_you(self, obj: RecommendationSet) -> int:
        return obj.for_you_lists

    @admin.display(description="similar lists", ordering="similar_lists")
    def similar(self, obj: RecommendationSet) -> int:
        return obj.similar_lists

    @admin.display(description="trending lists", ordering="trending_lists")
    def trending(self, obj: RecommendationSet) -> int:
        return obj.trending_lists

    @admin.display(description="Lists per placement")
    def list_counts(self, obj: RecommendationSet) -> str:
        rows = obj.lists.values("placement").annotate(n=Count("pk")).order_by("placement")
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((r["placement"], r["n"]) for r in rows)),
        )

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.change_recommendationset")

    @admin.action(description="Activate this set (roll back or forward to it)", permissions=["activate"])
    def activate_set(self, request: HttpRequest, queryset: QuerySet) -> None:
        from recommendations.engine.precompute import activate_set

        if queryset.count() != 1:
            self.message_user(request, "Select exactly one set to activate.", messages.ERROR)
            return
        chosen = queryset.get()
        try:
            activate_set(chosen.pk)
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Set #{chosen.pk} is now active; shoppers see its lists.", messages.SUCCESS)


@admin.register(StoredList)
class StoredListAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "recommendation_set", "placement", "subject", "length")
    list_filter = ("placement",)
    search_fields = ("=subject",)
    list_select_related = ("recommendation_set",)
    show_full_result_count = False
    ordering = ("-recommendation_set_id", "placement", "subject")

    @admin.display(description="items")
    def length(self, obj: StoredList) -> int:
        return len(obj.items or [])


@admin.register(PrecomputeRun)
class PrecomputeRunAdmin(ReadOnlyAdmin):
    list_display = (
        "__str__",
        "status",
        "progress_percent",
        "stage",
        "created_at",
        "started_at",
        "duration",
        "task_state",
        "recommendation_set",
    )
    list_filter = ("status",)
    readonly_fields = (
        "status",
        "progress_percent",
        "stage",
        "task_id",
        "task_state",
        "created_at",
        "started_at",
        "finished_at",
        "recommendation_set",
        "timings",
        "stats",
        "error",
    )
    exclude = ("progress",)
    change_list_template = "admin/recommendations/precomputerun/change_list.html"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Shown like a change form so every field is visible; nothing on it can be saved.
        return False

    def get_urls(self) -> list[URLPattern]:
        run_now = path(
            "run-now/",
            self.admin_site.admin_view(self.run_now_view),
            name="recommendations_precomputerun_run_now",
        )
        return [run_now, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_run_precompute": self._may_run(request)}
        return super().changelist_view(request, extra_context)

    @staticmethod
    def _may_run(request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.add_precomputerun")

    def run_now_view(self, request: HttpRequest) -> HttpResponse:
        from recommendations.tasks import enqueue_precompute

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self._may_run(request):
            self.message_user(request, "You may not start a precompute.", messages.ERROR)
        else:
            run = enqueue_precompute()
            self.message_user(
                request,
                f"Precompute run #{run.pk} queued (task {run.task_id}). Its progress shows below; reload to follow.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:recommendations_precomputerun_changelist"))

    @admin.display(description="progress", ordering="progress")
    def progress_percent(self, obj: PrecomputeRun) -> str:
        return f"{obj.progress * 100:.0f}%"

    @admin.display(description="duration")
    def duration(self, obj: PrecomputeRun) -> str:
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"
        return "-"

    @admin.display(description="task state")
    def task_state(self, obj: PrecomputeRun) -> str:
        """What Celery says about an unfinished run's task (needs a result backend; '-' without one)."""
        if not obj.task_id:
            return "-"
        if obj.status not in (PrecomputeRun.Status.PENDING, PrecomputeRun.Status.RUNNING):
            # Finished runs carry their own outcome; asking the backend for every row would slow the list.
            return "SUCCESS" if obj.status == PrecomputeRun.Status.SUCCEEDED else "FAILURE"
        from celery import current_app
        from celery.result import AsyncResult

        if current_app.conf.task_always_eager:
            return "-"  # tasks run in-process; there is no broker or result backend to ask
        try:
            return AsyncResult(obj.task_id).state
        except Exception:
            return "-"

    @admin.display(description="seconds per stage")
    def timings(self, obj: PrecomputeRun) -> str:
        seconds = (obj.stats or {}).get("seconds", {})
        if not seconds:
            return "-"
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((k, f"{v:.2f}") for k, v in seconds.items())),
        )
