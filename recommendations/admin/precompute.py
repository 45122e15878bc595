"""Precompute runs, read-only, with "Run now" (permission-checked, written to the admin log) and the schedules."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy

from recommendations.admin.base import ReadOnlyAdmin, attempts_summary, beat_schedules, report_launch, takeover_lines
from recommendations.admin.status import status_view
from recommendations.models import PrecomputeRun

PRECOMPUTE_TASK = "recommendations.tasks.precompute"


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
        "attempts_column",
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
        "heartbeat_at",
        "worker",
        "attempts_column",
        "what_happened",
        "recommendation_set",
        "timings",
        "stats",
        "error",
    )
    exclude = ("progress", "attempts", "takeovers")
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
        # The app's "System status" page lives here, one admin for the whole app having no model of its own.
        status = path(
            "status/",
            self.admin_site.admin_view(lambda request: status_view(self, request)),
            name="recommendations_status",
        )
        return [run_now, status, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "can_run_precompute": self._may_run(request),
            "beat_schedules": beat_schedules(request, PRECOMPUTE_TASK, "Precompute recommendations (hourly)"),
        }
        return super().changelist_view(request, extra_context)

    @staticmethod
    def _may_run(request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.add_precomputerun")

    def run_now_view(self, request: HttpRequest) -> HttpResponse:
        """Precompute now (POST only): queued on the broker, or without one in a background process; says which."""
        from recommendations.background import start_precompute

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self._may_run(request):
            # The button is hidden without the add permission; a direct POST is refused outright.
            raise PermissionDenied
        run, launch = start_precompute()
        report_launch(self, request, run, launch, "precompute")
        return HttpResponseRedirect(reverse("admin:recommendations_precomputerun_changelist"))

    @admin.display(description=gettext_lazy("progress"), ordering="progress")
    def progress_percent(self, obj: PrecomputeRun) -> str:
        return f"{obj.progress * 100:.0f}%"

    @admin.display(description=gettext_lazy("duration"))
    def duration(self, obj: PrecomputeRun) -> str:
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"
        return "-"

    @admin.display(description=gettext_lazy("task state"))
    def task_state(self, obj: PrecomputeRun) -> str:
        """What Celery says about an unfinished run's task (needs a result backend; '-' without one)."""
        if not obj.task_id:
            return "-"
        if obj.status not in (PrecomputeRun.Status.PENDING, PrecomputeRun.Status.RUNNING):
            # Finished runs carry their own outcome; asking the backend for every row would slow the list.
            return "SUCCESS" if obj.status == PrecomputeRun.Status.SUCCEEDED else "FAILURE"
        from celery import current_app
        from celery.result import AsyncResult

        from recommendations.tasks import runs_inline

        if runs_inline() or current_app.conf.task_always_eager:
            return "-"  # tasks run in-process; there is no broker or result backend to ask
        try:
            return AsyncResult(obj.task_id).state
        except Exception:
            return "-"

    @admin.display(description=gettext_lazy("attempts"), ordering="attempts")
    def attempts_column(self, obj: PrecomputeRun) -> str:
        return attempts_summary(obj)

    @admin.display(description=gettext_lazy("worker lost"))
    def what_happened(self, obj: PrecomputeRun) -> str:
        lines = takeover_lines(obj)
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines)) if lines else "-"

    @admin.display(description=gettext_lazy("seconds per stage"))
    def timings(self, obj: PrecomputeRun) -> str:
        seconds = (obj.stats or {}).get("seconds", {})
        if not seconds:
            return "-"
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((k, f"{v:.2f}") for k, v in seconds.items())),
        )
