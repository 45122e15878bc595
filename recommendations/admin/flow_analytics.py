"""A flow's analytics in the admin: per day, what the sender did (sent, skipped, failed), what the e-mails earned
(clicks, orders, revenue, from the roll-up of its placement email:<slug>) and who left, as totals, the same SVG
charts as the placements' page (admin/charts.py), the rows per day and a CSV; and, when an experiment runs on the
flow, its arms. FlowAdmin (admin/push.py) mixes this in: the page is /admin/recommendations/flow/<pk>/analytics/.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations import analytics
from recommendations.admin import charts
from recommendations.models import Flow
from recommendations.push import analytics as flow_analytics


def _line(label: str, c: flow_analytics.FlowCounts, **more: Any) -> dict[str, Any]:
    """One table row, formatted like the placements' page: thousands separators, rates as percentages."""
    return {
        "label": label,
        "sent": f"{c.sent:,}",
        "skipped_cap": f"{c.skipped_cap:,}",
        "skipped_weak": f"{c.skipped_weak:,}",
        "held_out": f"{c.held_out:,}",
        "failed": f"{c.failed:,}",
        "clicks": f"{c.clicks:,}",
        "click_rate": charts.rate(c.click_rate),
        "add_to_carts": f"{c.add_to_carts:,}",
        "orders": f"{c.orders:,}",
        "revenue": f"{c.revenue:,.2f}",
        "unsubscribes": f"{c.unsubscribes:,}",
        "unsubscribes_one_click": f"{c.unsubscribes_one_click:,}",
        "unsubscribes_page": f"{c.unsubscribes_page:,}",
        **more,
    }


def _arm_line(arm: flow_analytics.ArmCounts) -> dict[str, Any]:
    interval = arm.purchase_interval
    vs = arm.vs_baseline
    return {
        "name": arm.name,
        "strategy": arm.strategy,
        "is_baseline": arm.is_baseline,
        "shoppers": f"{arm.shoppers:,}",
        "sent": f"{arm.sent:,}",
        "clickers": f"{arm.clickers:,}",
        "orders": f"{arm.orders:,}",
        "revenue": f"{arm.revenue:,.2f}",
        "buyers": f"{arm.buyers:,}",
        "purchase_rate": charts.rate(arm.purchase_rate),
        "purchase_interval": _interval(interval),
        "difference": "" if arm.is_baseline else _difference(arm),
        "significant": arm.enough and vs.significant,
    }


def _interval(interval: tuple[float, float] | None) -> str:
    if not interval:
        return "-"
    return _("%(low)s to %(high)s") % {"low": charts.rate(interval[0]), "high": charts.rate(interval[1])}


def _difference(arm: flow_analytics.ArmCounts) -> str:
    vs = arm.vs_baseline
    if not arm.enough or vs.difference is None or vs.low is None or vs.high is None:
        return _("not enough data")
    return _("%(difference)s points (%(low)s to %(high)s)") % {
        "difference": f"{vs.difference * 100:+.1f}",
        "low": f"{vs.low * 100:+.1f}",
        "high": f"{vs.high * 100:+.1f}",
    }


class FlowAnalyticsMixin:
    """The analytics page, its CSV and the list's "last 7 days" columns, for FlowAdmin."""

    admin_site: admin.AdminSite
    model: type[Flow]

    def analytics_urls(self) -> list[URLPattern]:
        site = self.admin_site
        return [
            path(
                "<int:pk>/analytics/",
                site.admin_view(self.analytics_view),
                name="recommendations_flow_analytics",
            ),
            path(
                "<int:pk>/analytics/export/",
                site.admin_view(self.analytics_export_view),
                name="recommendations_flow_analytics_export",
            ),
        ]

    @admin.display(description=gettext_lazy("clicks (7 days)"), ordering="recent_clicks")
    def clicks_7_days(self, obj: Flow) -> str:
        url = reverse("admin:recommendations_flow_analytics", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, f"{getattr(obj, 'recent_clicks', 0):,}")

    @admin.display(description=gettext_lazy("orders (7 days)"), ordering="recent_orders")
    def orders_7_days(self, obj: Flow) -> str:
        return f"{getattr(obj, 'recent_orders', 0):,}"

    def _viewable_flow(self, request: HttpRequest, pk: int) -> Flow:
        flow = get_object_or_404(Flow, pk=pk)
        if not self.has_view_permission(request, flow):  # type: ignore[attr-defined]
            raise PermissionDenied
        return flow

    def analytics_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The report for a day range (GET from / to, as on the placements' page; a bad one is a 400 that says why)."""
        flow = self._viewable_flow(request, pk)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": flow,
            "title": _("Analytics of the flow “%(flow)s”") % {"flow": flow.name},
            "change_url": reverse("admin:recommendations_flow_change", args=[flow.pk]),
            "time_zone": settings.TIME_ZONE,
            "max_range_days": analytics.MAX_RANGE_DAYS,
        }
        status = 200
        try:
            start, end = analytics.parse_period(request.GET)
        except analytics.PeriodError as exc:
            context.update(error=str(exc), raw_from=request.GET.get("from", ""), raw_to=request.GET.get("to", ""))
            status = 400
        else:
            context.update(self._flow_report(flow, start, end))
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/recommendations/flow/analytics.html", context, status=status)

    def _flow_report(self, flow: Flow, start: date, end: date) -> dict[str, Any]:
        days = analytics.days_between(start, end)
        by_day = flow_analytics.flow_days(flow, start, end)
        total = flow_analytics.totals(by_day)
        labels = [charts.day_label(d) for d in days]

        def per_day(names: dict[str, str]) -> dict[str, list[float | None]]:
            """{series label: its value per day} for the attributes `names` maps labels to."""
            return {
                label: [float(getattr(c, attribute)) if (c := by_day.get(d)) else 0.0 for d in days]
                for label, attribute in names.items()
            }

        query = urlencode({"from": start.isoformat(), "to": end.isoformat()})
        placement_query = urlencode({"from": start, "to": end, "placement": flow.event_placement})
        experiment = flow_analytics.flow_experiment(flow)
        sending = {_("sent"): "sent", _("skipped: cap"): "skipped_cap", _("skipped: weak"): "skipped_weak"}
        if total.held_out:  # only with an experiment that holds shoppers out
            sending[_("held out")] = "held_out"
        if total.failed:
            sending[_("failed")] = "failed"
        return {
            "start": start,
            "end": end,
            "raw_from": start.isoformat(),
            "raw_to": end.isoformat(),
            "total": _line(_("Total"), total),
            "rows": [_line("", by_day[d], day=d) for d in reversed(days) if d in by_day],
            "export_url": reverse("admin:recommendations_flow_analytics_export", args=[flow.pk]) + "?" + query,
            "placement_url": reverse("admin:recommendations_placementday_changelist") + "?" + placement_query,
            "messages_url": reverse("admin:recommendations_message_changelist") + f"?flow__id__exact={flow.pk}",
            "experiment": experiment,
            "experiment_url": reverse("admin:recommendations_experiment_change", args=[experiment.pk])
            if experiment
            else "",
            "arms": [_arm_line(arm) for arm in flow_analytics.arms(experiment)] if experiment else [],
            "click_rate_chart": charts.line_chart(
                {
                    _("click rate"): [c.click_rate if (c := by_day.get(d)) else None for d in days],
                },
                labels,
                title=_("Click rate per day (clicks per e-mail sent)"),
                width=900,
                y_label=_("clicks per e-mail"),
                y_format=charts.percent,
            ),
            "sending_chart": charts.bar_chart(
                per_day(sending), labels, title=_("E-mails per day"), y_label=_("e-mails"), width=460
            ),
            "clicks_chart": charts.bar_chart(
                per_day({_("clicks"): "clicks", _("orders"): "orders"}),
                labels,
                title=_("Clicks and orders per day"),
                y_label=_("count"),
                width=460,
                stacked=False,
            ),
            "revenue_chart": charts.bar_chart(
                per_day({_("revenue"): "revenue"}),
                labels,
                title=_("Attributed revenue per day"),
                y_label=_("revenue"),
                width=460,
            ),
            "unsubscribes_chart": charts.bar_chart(
                per_day({_("one-click"): "unsubscribes_one_click", _("preference page"): "unsubscribes_page"}),
                labels,
                title=_("Unsubscribes per day"),
                y_label=_("shoppers"),
                width=460,
            ),
        }

    def analytics_export_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The flow's rows per day as CSV, streamed; a bad range is a 400 with the reason, like the page."""
        flow = self._viewable_flow(request, pk)
        try:
            start, end = analytics.parse_period(request.GET)
        except analytics.PeriodError as exc:
            return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
        response = StreamingHttpResponse(
            analytics.csv_lines(flow_analytics.csv_rows(flow, start, end)), content_type="text/csv; charset=utf-8"
        )
        # A slug is ASCII letters, digits, "-" and "_": safe in the header as it is.
        response["Content-Disposition"] = f'attachment; filename="flow-{flow.slug}-{start}-{end}.csv"'
        return response
