"""The admin's experiments: A/B/n tests per placement with their arms, Start / Stop, the live report and "Promote".

A draft is edited freely; Start checks it again (two or more arms, shares above 0, a model version with a sound
artefact, a known placement, no other experiment running there), fixes a random salt and the start time, and from
then on the arms and the placement are read-only, since changing them mid-test would mix two tests in one report.
Start, Stop and Promote POST to views that need the change permission on experiments (403 without it) and write a
LogEntry on the experiment under the user who pressed them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations.admin import charts
from recommendations.experiments import operations
from recommendations.experiments import report as stats
from recommendations.models import Experiment, ExperimentVariant, TrainingRun

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


def _comparison_cells(prefix: str, comparison: stats.Comparison, enough: bool = True) -> dict[str, Any]:
    """One arm-against-control comparison as the page's formatted cells, keyed `<prefix>_difference` and so on.

    Without enough data (`stats.enough_data`) the cells say so rather than show an interval that means nothing.
    """
    if not enough:
        return {
            f"{prefix}_enough": False,
            f"{prefix}_difference": _("not enough data"),
            f"{prefix}_difference_interval": "",
            f"{prefix}_lift": "-",
            f"{prefix}_lift_interval": "",
            f"{prefix}_p": "-",
            f"{prefix}_significant": False,
            f"{prefix}_direction": "",
        }
    return {
        f"{prefix}_enough": True,
        f"{prefix}_difference": _percent(comparison.difference, signed=True),
        f"{prefix}_difference_interval": _interval(comparison.low, comparison.high),
        f"{prefix}_lift": _percent(comparison.lift, signed=True),
        f"{prefix}_lift_interval": _interval(comparison.lift_low, comparison.lift_high),
        f"{prefix}_p": _p_value(comparison.p_value),
        f"{prefix}_significant": comparison.significant,
        f"{prefix}_direction": _direction(comparison.difference),
    }


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}"
    return text + "%"


def _interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{_percent(low, signed=True)} to {_percent(high, signed=True)}"


def _rate_interval(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"{_percent(interval[0])} to {_percent(interval[1])}"


def _direction(difference: float | None) -> str:
    return "better" if difference is not None and difference > 0 else "worse"


def _p_value(value: float | None) -> str:
    if value is None:
        return "-"
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


class VariantForm(forms.ModelForm):
    class Meta:
        model = ExperimentVariant
        fields = ("name", "share", "strategy", "training_run")

    def clean_name(self) -> str:
        name = (self.cleaned_data.get("name") or "").strip()
        if not NAME_PATTERN.match(name):
            raise ValidationError(_("Use letters, digits, “_”, “.” or “-” only (it is stamped on every event)."))
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors or data.get("DELETE"):
            return data
        problems = operations.variant_problems(
            data.get("name", ""), data.get("share"), data.get("strategy", ""), data.get("training_run")
        )
        if problems:
            raise ValidationError(problems)
        return data


class VariantFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        kept = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        if len(kept) < 2:
            raise ValidationError(
                _("An experiment needs at least two variants: a control (the first) and a challenger.")
            )
        # Exact repeats are caught by the unique constraint; "A" and "a" would be two arms staff cannot tell apart.
        names = [f.cleaned_data["name"].casefold() for f in kept]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValidationError(
                _("The variants' names must differ (ignoring case); repeated: %(names)s.")
                % {"names": ", ".join(repeated)}
            )
        placement = getattr(self.instance, "placement", "") or ""
        if not placement.startswith(operations.EMAIL_PREFIX) and any(
            f.cleaned_data.get("strategy") == ExperimentVariant.Strategy.HOLDOUT for f in kept
        ):
            raise ValidationError(_("Only an e-mail flow's experiment (email:<slug>) can hold shoppers out."))


class VariantInline(admin.TabularInline):
    model = ExperimentVariant
    form = VariantForm
    formset = VariantFormSet
    extra = 0
    min_num = 2
    fields = ("name", "share", "strategy", "training_run")

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "training_run":
            kwargs["queryset"] = TrainingRun.objects.exclude(artefact_path="").exclude(artefact_sha256="")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # Once started, the arms are frozen: new shares or names would mix two tests in one report.
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _draft(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _draft(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _draft(obj) and super().has_delete_permission(request, obj)


def _draft(obj: Experiment | None) -> bool:
    return obj is None or obj.status == Experiment.Status.DRAFT


class ExperimentForm(forms.ModelForm):
    placement = forms.ChoiceField(help_text=gettext_lazy("The surface whose blocks the arms serve"))

    class Meta:
        model = Experiment
        fields = ("name", "placement")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "placement" not in self.fields:  # read-only once started
            return
        names = operations.experiment_placements()
        current = self.instance.placement if self.instance.pk else ""
        choices = [(n, n) for n in names]
        if current and current not in names:  # a placement since removed from the settings: show it, refuse it
            choices.append((current, _("%(name)s (unknown)") % {"name": current}))
        self.fields["placement"].choices = choices

    def clean_placement(self) -> str:
        placement = self.cleaned_data["placement"]
        if placement not in operations.experiment_placements():
            raise ValidationError(_("There is no placement called “%(name)s”.") % {"name": placement})
        return placement


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    inlines = [VariantInline]
    list_display = ("name", "placement", "status", "arms", "started_at", "stopped_at", "winner")
    list_filter = ("status", "placement")
    search_fields = ("name",)
    list_select_related = ("winner",)
    readonly_fields = ("status", "started_at", "stopped_at", "winner", "salt", "created_at")
    change_form_template = "admin/recommendations/experiment/change_form.html"

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("variants")

    @admin.display(description=gettext_lazy("arms"))
    def arms(self, obj: Experiment) -> str:
        variants = list(obj.variants.all())
        total = sum(v.share for v in variants if v.share > 0) or 1.0
        return ", ".join(f"{v.name} {v.share / total:.0%}" for v in variants)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if _draft(obj) else ("placement", *fields)

    def get_urls(self) -> list[URLPattern]:
        def view(function: Any, route: str, name: str) -> URLPattern:
            return path(route, self.admin_site.admin_view(function), name=f"recommendations_experiment_{name}")

        return [
            view(self.start_view, "<path:object_id>/start/", "start"),
            view(self.stop_view, "<path:object_id>/stop/", "stop"),
            view(self.promote_view, "<path:object_id>/promote/<int:variant_id>/", "promote"),
            *super().get_urls(),
        ]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.change_experiment")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        experiment = self.get_object(request, unquote(object_id))
        if experiment is not None:
            extra_context.update(self.report_context(experiment))
            extra_context["can_operate"] = self.has_operate_permission(request)
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def report_context(experiment: Experiment) -> dict[str, Any]:
        """The report's rows (formatted) and its chart, for the change page."""
        result = stats.report(experiment)
        winner = result.winner
        rows = []
        for arm in result.arms:
            clicked, conversion = arm.click_rate_vs_control, arm.conversion_vs_control
            revenue_per_shopper = arm.revenue_per_shopper
            rows.append(
                {
                    "variant_id": arm.variant_id,
                    "name": arm.name,
                    "strategy": arm.strategy + (f" (run #{arm.training_run_id})" if arm.training_run_id else ""),
                    "share": f"{arm.share:.0%}",
                    "is_control": arm.is_control,
                    "is_winner": arm.variant_id == experiment.winner_id,
                    "impressions": f"{arm.impressions:,}",
                    "clicks": f"{arm.clicks:,}",
                    "ctr": _percent(arm.ctr),
                    "shoppers": f"{arm.shoppers:,}",
                    "clickers": f"{arm.clickers:,}",
                    "click_rate": _percent(arm.click_rate),
                    "click_rate_interval": _rate_interval(arm.click_rate_interval),
                    "add_to_carts": f"{arm.add_to_carts:,}",
                    "orders": f"{arm.orders:,}",
                    "buyers": f"{arm.buyers:,}",
                    "conversion": _percent(arm.conversion),
                    "conversion_interval": _rate_interval(arm.conversion_interval),
                    "revenue": f"{arm.revenue:,.2f}",
                    "revenue_per_shopper": "-" if revenue_per_shopper is None else f"{revenue_per_shopper:,.2f}",
                    **_comparison_cells("click", clicked, arm.click_enough),
                    **_comparison_cells("conversion", conversion, arm.conversion_enough),
                    # Only the arm the data picks is offered as "the winner"; any other arm may still be promoted
                    # by hand, under a plain label.
                    "is_clear_winner": winner is not None and arm.variant_id == winner.variant_id,
                }
            )
        chart = None
        if result.arms:
            chart = charts.interval_bar_chart(
                {arm.name: arm.click_rate for arm in result.arms},
                {arm.name: arm.click_rate_interval for arm in result.arms},
                title=_("Shoppers who clicked, per variant (95%% interval)") % {},
                series_name=_("Click rate"),
                y_label=_("share of the arm's shoppers"),
                y_format=charts.percent,
            )
        return {
            "report_rows": rows,
            "report_since": result.since,
            "report_chart": chart,
            "report_has_winner": winner is not None,
            "report_min_shoppers": stats.MIN_SHOPPERS_PER_ARM,
            "report_min_outcomes": stats.MIN_OUTCOMES,
        }

    # -- operations ---------------------------------------------------------------------------------------------

    def _operable(self, request: HttpRequest, object_id: str) -> Experiment:
        """The experiment an operation acts on, once the user may operate (403 otherwise)."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        experiment = self.get_object(request, unquote(object_id))
        if experiment is None:
            raise Http404(f"No experiment {object_id!r}.")
        return experiment

    def _back(self, experiment: Experiment) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:recommendations_experiment_change", args=[experiment.pk]))

    def start_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Start: a fresh salt, started_at now; refused with the reasons when the experiment is not ready."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        experiment = self._operable(request, object_id)
        try:
            experiment = operations.start(experiment.pk)
        except operations.ExperimentError as exc:
            self.message_user(
                request,
                _("“%(name)s” was not started: %(error)s") % {"name": experiment.name, "error": exc},
                messages.ERROR,
            )
            return self._back(experiment)
        logger.info("%s started experiment #%s on %s", request.user.get_username(), experiment.pk, experiment.placement)
        self.log_change(request, experiment, f"Started the experiment on {experiment.placement}.")
        self.message_user(
            request,
            _("“%(name)s” runs on %(placement)s: shoppers are split between its arms from now on.")
            % {"name": experiment.name, "placement": experiment.placement},
            messages.SUCCESS,
        )
        return self._back(experiment)

    def stop_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Stop: every shopper gets the placement's own behaviour again; the report stays."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        experiment = self._operable(request, object_id)
        try:
            experiment = operations.stop(experiment.pk)
        except operations.ExperimentError as exc:
            self.message_user(
                request,
                _("“%(name)s” was not stopped: %(error)s") % {"name": experiment.name, "error": exc},
                messages.ERROR,
            )
            return self._back(experiment)
        logger.info("%s stopped experiment #%s", request.user.get_username(), experiment.pk)
        self.log_change(request, experiment, "Stopped the experiment.")
        self.message_user(
            request,
            _("“%(name)s” stopped; the placement serves as before.") % {"name": experiment.name},
            messages.SUCCESS,
        )
        return self._back(experiment)

    @staticmethod
    def _activation_starter(request: HttpRequest) -> Callable[[int], str]:
        """How a promoted model version starts serving: checked and loaded by a training worker or a background
        process, never in this web process (a neural model would bring TensorFlow in); says what it started."""

        def start(run_id: int) -> str:
            from recommendations.background import start_activation

            launch = start_activation(
                run_id, by=request.user.get_username(), user_id=request.user.pk, note="Promoted this run's model"
            )
            if launch.how == "failed":
                raise operations.ExperimentError(
                    f"Training run #{run_id} was not activated: no background process could be started "
                    f"({launch.error}). Run {launch.command} instead"
                )
            where = {
                "queued": f"on a training worker (task {launch.task_id})",
                "background": f"in a background process (pid {launch.pid})",
            }.get(launch.how, "in a background process once the promotion is saved")
            return (
                f"activation of training run #{run_id} started {where}: it serves once its model loads, "
                "which the run's page shows"
            )

        return start

    def promote_view(self, request: HttpRequest, object_id: str, variant_id: int) -> HttpResponse:
        """Promote an arm: stop, record it as the winner and make it the placement's behaviour."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        experiment = self._operable(request, object_id)
        by = request.user.get_username()
        try:
            done = operations.promote(
                experiment.pk, variant_id, by=by, start_activation=self._activation_starter(request)
            )
        except operations.ExperimentError as exc:
            self.message_user(request, _("Nothing was promoted: %(error)s") % {"error": exc}, messages.ERROR)
            return self._back(experiment)
        experiment.refresh_from_db()
        logger.info("%s promoted variant #%s of experiment #%s: %s", by, variant_id, experiment.pk, done)
        self.log_change(request, experiment, done)
        self.message_user(request, done, messages.SUCCESS)
        return self._back(experiment)
