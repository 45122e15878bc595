"""Push e-mails in the admin: flows (the list's enable switch, "Send due e-mails now", and a preview of one shopper's
e-mail exactly as it would be sent), the sent and skipped messages (read-only, filtered), and e-mail consents.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404
from django.template import TemplateSyntaxError, engines
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy, ngettext

from recommendations import serving, tasks
from recommendations.admin.base import ReadOnlyAdmin, beat_schedules
from recommendations.admin.flow_analytics import FlowAnalyticsMixin
from recommendations.models import EmailConsent, Flow, Message
from recommendations.push import timing
from recommendations.push.analytics import recent_annotations
from recommendations.push.sending import preview
from recommendations.push.triggers import TRIGGERS

# The placements a flow may fill from: for_you for anyone; the product's placements need the products that set the
# flow off (viewed, in the cart, back in stock, cheaper, bought): triggers whose `has_anchors` says they have some.
NEEDS_VIEWED = ("similar", "bought_together")


OPTIONAL_NUMBERS = ("days", "price_drop_percent")


class FlowForm(forms.ModelForm):
    placement = forms.ChoiceField(
        help_text=gettext_lazy("Whose pipeline picks the products (its rules and experiments apply)")
    )
    best_hour = forms.NullBooleanField(
        required=False,
        label=gettext_lazy("Send at the shopper's best hour"),
        help_text=gettext_lazy(
            "Wait, within a day, for the hour the shopper is usually active; the trigger's default is on for weekly "
            "picks only (an event trigger's window must then be a day longer than its delay)"
        ),
        widget=forms.NullBooleanSelect(),
    )

    class Meta:
        model = Flow
        fields = [
            "name",
            "slug",
            "enabled",
            "trigger",
            "window_hours",
            "delay_hours",
            "placement",
            "size",
            "min_good_items",
            "subject",
            "cap_days",
            "days",
            "price_drop_percent",
            "best_hour",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["placement"].choices = [(name, name) for name in serving.placement_names()]
        for name in OPTIONAL_NUMBERS:  # read by some triggers only: left out, the model's default
            self.fields[name].required = False
        self.fields["best_hour"].widget.choices = [
            ("unknown", gettext("The trigger's default")),
            ("true", gettext("Yes")),
            ("false", gettext("No")),
        ]

    def clean_subject(self) -> str:
        subject = self.cleaned_data["subject"].strip()
        try:
            engines["django"].from_string(subject)
        except TemplateSyntaxError as exc:
            raise ValidationError(gettext("The subject is not a valid template: %(error)s") % {"error": exc}) from exc
        return subject

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for name in OPTIONAL_NUMBERS:
            if data.get(name) is None:
                data[name] = Flow._meta.get_field(name).default
        trigger = TRIGGERS.get(data.get("trigger") or "")
        if data.get("placement") in NEEDS_VIEWED and trigger is not None and not trigger.has_anchors:
            self.add_error(
                "placement",
                gettext(
                    "%(placement)s needs the products that set the flow off (viewed, in the cart, back in stock, "
                    "cheaper, bought): this trigger has none."
                )
                % {"placement": data["placement"]},
            )
        size, least = data.get("size"), data.get("min_good_items")
        if size is not None and not 1 <= size <= 20:
            self.add_error("size", gettext("An e-mail shows 1 to 20 products."))
        elif size is not None and least is not None and least > size:
            self.add_error("min_good_items", gettext("Cannot be more than the products per e-mail."))
        if data.get("trigger") in (Flow.Trigger.BROWSE_ABANDONMENT, Flow.Trigger.CART_ABANDONMENT):
            window, delay = data.get("window_hours"), data.get("delay_hours")
            if window is not None and delay is not None and delay >= window:
                self.add_error("delay_hours", gettext("The delay must be shorter than the window."))
            elif window is not None and delay is not None and trigger is not None:
                # A due e-mail may wait for the morning or the shopper's hour; if the views that set it off leave the
                # window meanwhile, the shopper is no longer due and nothing is ever sent.
                best = data.get("best_hour")
                wait = timing.longest_wait_hours(trigger.best_hour_default if best is None else bool(best))
                if delay + wait > window:
                    self.add_error(
                        "window_hours",
                        gettext(
                            "At least %(hours)d hours: the delay and the longest wait for the shopper's hour (%(wait)d "
                            "hours of quiet hours or best hour), or the e-mail of a shopper who left late in the day "
                            "is never sent."
                        )
                        % {"hours": delay + wait, "wait": wait},
                    )
        return data


class PreviewForm(forms.Form):
    user = forms.CharField(max_length=64, label=gettext_lazy("User id"))


@admin.register(Flow)
class FlowAdmin(FlowAnalyticsMixin, admin.ModelAdmin):
    form = FlowForm
    list_display = [
        "name",
        "slug",
        "trigger",
        "placement",
        "enabled",
        "cap_days",
        "sent_7_days",
        "clicks_7_days",
        "orders_7_days",
    ]
    list_editable = ["enabled"]
    list_filter = ["enabled", "trigger"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ("name",)}
    actions = ["send_now"]
    change_form_template = "admin/recommendations/flow/change_form.html"
    change_list_template = "admin/recommendations/flow/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Flow]:
        week = timezone.now() - timedelta(days=7)
        return (
            super()
            .get_queryset(request)
            .annotate(sent_week=Count("messages", filter=Q(messages__status="sent", messages__created_at__gte=week)))
            .annotate(**recent_annotations(days=7))
        )

    @admin.display(description=gettext_lazy("sent (7 days)"), ordering="sent_week")
    def sent_7_days(self, obj: Flow) -> int:
        return getattr(obj, "sent_week", 0)

    @admin.action(description=gettext_lazy("Send the selected flows' due e-mails now"), permissions=["change"])
    def send_now(self, request: HttpRequest, queryset: QuerySet[Flow]) -> None:
        flows = [flow for flow in queryset if flow.enabled]
        if not flows:
            self.message_user(request, gettext("None of the selected flows is enabled."), messages.WARNING)
            return
        if tasks.runs_inline():
            # Sending a flow is a batch job: never in a web request. Without a broker, the command does it.
            self.message_user(
                request,
                gettext("There is no Celery broker here: run “manage.py send_flows --flow %(slug)s” instead.")
                % {"slug": flows[0].slug},
                messages.WARNING,
            )
            return
        for flow in flows:
            tasks.enqueue_send_due_messages(flow.slug)
        self.message_user(
            request,
            ngettext(
                "Sending the due e-mails of %(count)d flow on a worker.",
                "Sending the due e-mails of %(count)d flows on a worker.",
                len(flows),
            )
            % {"count": len(flows)},
        )

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.preview_view)
        return [
            path("<int:pk>/preview/", view, name="recommendations_flow_preview"),
            *self.analytics_urls(),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        schedules = beat_schedules(
            request, "recommendations.tasks.send_due_messages", "Send due recommendation e-mails"
        )
        return super().changelist_view(request, {**(extra_context or {}), "beat_schedules": schedules})

    def preview_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """One shopper's e-mail as it would be sent now: subject, headers, both bodies (GET; view permission)."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        flow = get_object_or_404(Flow, pk=pk)
        if not self.has_view_permission(request, flow):
            raise PermissionDenied
        form = PreviewForm(request.GET or None)
        result = preview(flow, form.cleaned_data["user"].strip()) if form.is_bound and form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": flow,
            "title": gettext("Preview an e-mail of “%(flow)s”") % {"flow": flow.name},
            "form": form,
            "result": result,
            "change_url": reverse("admin:recommendations_flow_change", args=[flow.pk]),
        }
        return TemplateResponse(request, "admin/recommendations/flow/preview.html", context)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "flow", "user_id", "status", "period", "product_count", "sent_at"]
    list_filter = ["status", "flow", "created_at"]
    search_fields = ["user_id", "key", "recommendation_id"]
    date_hierarchy = "created_at"
    list_select_related = ["flow"]
    readonly_fields = [
        "key",
        "flow",
        "user_id",
        "period",
        "status",
        "subject",
        "recommendation_id",
        "variant",
        "products",
        "created_at",
        "sent_at",
        "error",
    ]

    @admin.display(description=gettext_lazy("products"))
    def product_count(self, obj: Message) -> int:
        return len(obj.products or [])


@admin.register(EmailConsent)
class EmailConsentAdmin(ReadOnlyAdmin):
    list_display = ["user_id", "opted_in", "opted_in_at", "opted_out_at", "opted_out_via", "updated_at"]
    list_filter = ["opted_in"]
    search_fields = ["user_id"]
