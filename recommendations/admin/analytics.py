"""The admin's analytics: per placement and day (PlacementDay rows) as totals, SVG charts and a CSV export, and the
validation-metrics chart on the training runs' page.

The rows are written by `analytics.rebuild_days` (the hourly task, the command, or "Refresh now" here), never by a
form, so they are read-only. The page is the PlacementDay changelist, replaced by a report: a date range (default the
last 30 days) and a placement filter, totals per placement, charts per day, the rows per day, and an export.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from recommendations import analytics
from recommendations.admin import charts
from recommendations.models import PlacementDay, TrainingRun

logger = logging.getLogger(__name__)

MAX_ROWS_SHOWN = 500  # the per-day table below the charts; the CSV has every row


def _line(label: str, row: Any, **more: Any) -> dict[str, Any]:
    """One table row, formatted: counts with thousands separators, rates as percentages ("-" with no base)."""
    return {
        "label": label,
        "impressions": f"{row.impressions:,}",
        "clicks": f"{row.clicks:,}",
        "ctr": charts.rate(analytics.ratio(row.clicks, row.impressions)),
        "add_to_carts": f"{row.add_to_carts:,}",
        "orders": f"{row.orders:,}",
        "revenue": f"{row.revenue:,.2f}",
        "items_shown": f"{row.items_shown:,}",
        "exploration_items": f"{row.exploration_items:,}",
        "exploration_share": charts.rate(analytics.ratio(row.exploration_items, row.items_shown)),
        **more,
    }


@admin.register(PlacementDay)
class PlacementDayAdmin(admin.ModelAdmin):
    """Analytics per placement and day; staff with the change permission may rebuild the shown days now."""

    change_list_template = "admin/recommendations/placementday/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_refresh_permission(self, request: HttpRequest) -> bool:
        """Rebuilding is a change to the rows, so it takes the model's change permission (which forms never use)."""
        return request.user.has_perm("recommendations.change_placementday")

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "refresh/", self.admin_site.admin_view(self.refresh_view), name="recommendations_placementday_refresh"
            ),
            path("export/", self.admin_site.admin_view(self.export_view), name="recommendations_placementday_export"),
        ]
        return [*own, *super().get_urls()]

    def _filters(self, request: HttpRequest, params: Any) -> tuple[date, date, str]:
        """The validated (from, to, placement) of a request; PeriodError with a sentence for staff otherwise."""
        start, end = analytics.parse_period(params)
        placement = (params.get("placement") or "").strip()
        if placement and placement not in analytics.known_placements():
            raise analytics.PeriodError(_("There is no placement called “%(name)s”.") % {"name": placement})
        return start, end, placement

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Analytics: placements per day"),
            "placements": analytics.known_placements(),
            "can_refresh": self.has_refresh_permission(request),
            "max_range_days": analytics.MAX_RANGE_DAYS,
            "time_zone": settings.TIME_ZONE,
            **(extra_context or {}),
        }
        status = 200
        try:
            start, end, placement = self._filters(request, request.GET)
        except analytics.PeriodError as exc:
            context.update(error=str(exc), raw_from=request.GET.get("from", ""), raw_to=request.GET.get("to", ""))
            context["chosen_placement"] = request.GET.get("placement", "")
            status = 400
        else:
            context.update(self._report(start, end, placement))
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_list_template, context, status=status)

    def _report(self, start: date, end: date, placement: str) -> dict[str, Any]:
        per_placement, grand = analytics.totals(start, end, placement)
        days = analytics.days_between(start, end)
        by_day = analytics.daily(start, end, placement)
        labels = [charts.day_label(d) for d in days]

        def per_day(attribute: str) -> dict[str, list[float | None]]:
            return {
                name: [float(getattr(row, attribute)) if (row := rows.get(d)) else 0.0 for d in days]
                for name, rows in by_day.items()
            }

        ctr = {name: [row.ctr if (row := rows.get(d)) else None for d in days] for name, rows in by_day.items()}
        rows = list(analytics.placement_days(start, end, placement).order_by("-day", "placement", "variant"))
        query = {"from": start.isoformat(), "to": end.isoformat(), **({"placement": placement} if placement else {})}
        return {
            "start": start,
            "end": end,
            "raw_from": start.isoformat(),
            "raw_to": end.isoformat(),
            "chosen_placement": placement,
            "per_placement": [_line(t.placement, t) for t in per_placement],
            "grand": _line(grand.placement, grand),
            "has_rows": bool(rows),
            "rows": [_line(r.placement, r, day=r.day, variant=r.variant) for r in rows[:MAX_ROWS_SHOWN]],
            "rows_cut": max(0, len(rows) - MAX_ROWS_SHOWN),
            "export_url": f"{reverse('admin:recommendations_placementday_export')}?{urlencode(query)}",
            "ctr_chart": charts.line_chart(
                ctr,
                labels,
                title=_("Click-through rate by placement"),
                width=900,
                y_label=_("clicks per block"),
                y_format=charts.percent,
            ),
            "impressions_chart": charts.bar_chart(
                per_day("impressions"), labels, title=_("Impressions per day"), y_label=_("blocks shown"), width=460
            ),
            "clicks_chart": charts.bar_chart(
                per_day("clicks"), labels, title=_("Clicks per day"), y_label=_("clicks"), width=460
            ),
            "revenue_chart": charts.bar_chart(
                per_day("revenue"), labels, title=_("Attributed revenue per day"), y_label=_("revenue"), width=900
            ),
        }

    def refresh_view(self, request: HttpRequest) -> HttpResponse:
        """Rebuild the shown days (POST only; 403 without the change permission), logged in the history.

        With a broker the rebuild is queued; without one (tasks.task_mode() "inline") it runs here, in the request:
        a roll-up of at most MAX_RANGE_DAYS days in SQL, no model loaded, and the message then says it is done.
        """
        from recommendations.tasks import enqueue_analytics_refresh, runs_inline

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_refresh_permission(request):
            raise PermissionDenied
        changelist = reverse("admin:recommendations_placementday_changelist")
        try:
            start, end = analytics.parse_period(request.POST)
        except analytics.PeriodError as exc:
            self.message_user(request, _("Nothing was refreshed: %(error)s") % {"error": exc}, messages.ERROR)
            return HttpResponseRedirect(changelist)
        if runs_inline():
            try:
                rows = analytics.rebuild_days(start, end)
            except Exception as exc:
                logger.exception("analytics rebuild of %s..%s failed", start, end)
                self.message_user(
                    request,
                    _("The analytics for %(start)s to %(end)s were not rebuilt (%(error)s); run %(command)s.")
                    % {"start": start, "end": end, "error": exc, "command": "python manage.py refresh_analytics"},
                    messages.ERROR,
                )
                return HttpResponseRedirect(changelist)
            done = f"Rebuilt the analytics for {start} to {end} from the admin ({rows} rows)."
            said = _("The analytics for %(start)s to %(end)s were rebuilt from the events: %(rows)s rows.") % {
                "start": start,
                "end": end,
                "rows": rows,
            }
        else:
            enqueue_analytics_refresh(start.isoformat(), end.isoformat())
            done = f"Queued a rebuild of the analytics for {start} to {end} from the admin."
            said = _(
                "The analytics for %(start)s to %(end)s are being rebuilt from the events; reload in a moment."
            ) % {"start": start, "end": end}
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type=ContentType.objects.get_for_model(PlacementDay),
            object_id=None,
            object_repr=f"Analytics {start} to {end}",
            action_flag=CHANGE,
            change_message=done,
        )
        logger.info("%s (by %s)", done, request.user.get_username())
        self.message_user(request, said, messages.SUCCESS)
        query = {"from": start.isoformat(), "to": end.isoformat()}
        placement = request.POST.get("placement", "")
        if placement:
            query["placement"] = placement
        return HttpResponseRedirect(f"{changelist}?{urlencode(query)}")

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The filtered rows as CSV, streamed; a bad filter is a 400 with the reason, like the page."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        try:
            start, end, placement = self._filters(request, request.GET)
        except analytics.PeriodError as exc:
            return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
        name = f"analytics-{start}-{end}{'-' + placement if placement else ''}.csv"
        response = StreamingHttpResponse(
            analytics.csv_lines(analytics.csv_rows(start, end, placement)), content_type="text/csv; charset=utf-8"
        )
        # The placement is one of the known names, but a name may hold anything: keep the header plain ASCII.
        safe_name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
        response["Content-Disposition"] = f'attachment; filename="{safe_name}"'
        return response


# ---- training runs ------------------------------------------------------------------------------------------------

CHART_RUNS = 30
FINISHED = (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.KEPT_OLD)


def validation_metrics_chart(limit: int = CHART_RUNS) -> SafeString | None:
    """Validation NDCG@10 of the last `limit` finished runs, with the chosen model's recall@10 and coverage where the
    run recorded them; None before the first finished run (the template then shows nothing)."""
    runs = list(
        TrainingRun.objects.filter(status__in=FINISHED, validation_ndcg__isnull=False)
        .order_by("-created_at", "-pk")
        .values("pk", "validation_ndcg", "candidates", "chosen")[:limit]
    )
    if not runs:
        return None
    runs.reverse()  # oldest on the left

    def chosen_metric(run: dict[str, Any], key: str) -> float | None:
        report = (run["candidates"] or {}).get(run["chosen"]) or {}
        value = (report.get("validation") or {}).get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    series: dict[str, list[float | None]] = {"validation NDCG@10": [run["validation_ndcg"] for run in runs]}
    for key, label in (("recall", "recall@10"), ("coverage", "coverage")):
        values = [chosen_metric(run, key) for run in runs]
        if any(v is not None for v in values):
            series[label] = values
    return charts.line_chart(
        series,
        [f"#{run['pk']}" for run in runs],
        title=ngettext(
            "Validation metrics of the last finished run",
            "Validation metrics of the last %(count)d finished runs",
            len(runs),
        )
        % {"count": len(runs)},
        y_label=_("score"),
        width=900,
    )
