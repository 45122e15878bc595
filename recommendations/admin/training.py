"""Training runs, the model registry: every retrain side by side; retrain now, activate a run, or roll back.

Every operation staff start here is permission-checked and written to the admin log (LogEntry) under the user who did
it; starting a run is reported by `base.report_launch`, like the precompute screen's.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations.admin.analytics import validation_metrics_chart
from recommendations.admin.base import ReadOnlyAdmin, attempts_summary, beat_schedules, report_launch, takeover_lines
from recommendations.models import PrecomputeRun, RecommendationSet, TrainingRun

logger = logging.getLogger(__name__)

RETRAIN_TASK = "recommendations.tasks.retrain"


# What staff see when they ask for a run's model to serve; it is checked and loaded elsewhere (see _make_serve).
ACTIVATION_MESSAGES = {
    "queued": gettext_lazy(
        "%(run)s was sent to a training worker (task %(task)s), which checks its model and makes it serve once it "
        "loads; this page shows it, reload to follow."
    ),
    "background": gettext_lazy(
        "%(run)s is being checked in a background process (pid %(pid)s) and will serve once its model loads; this "
        "page shows it, reload to follow."
    ),
    "deferred": gettext_lazy(
        "%(run)s will be checked in a background process once this request's changes are saved, and will serve once "
        "its model loads; this page shows it, reload to follow."
    ),
    "failed": gettext_lazy(
        "%(run)s was not activated: no background process could be started (%(error)s). Run %(command)s instead. "
        "The serving model is unchanged."
    ),
}


def lists_note(run: TrainingRun) -> tuple[bool, str] | None:
    """(settled, html) for a serving run: whether shoppers' lists come from its model yet. A run reads "succeeded"
    once its model serves, but the lists follow only when the precompute its activation sent has finished, so the
    page says which precompute that is and how far it got. None for a run that does not serve."""
    if not run.is_serving:
        return None
    active = RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE).order_by("-pk").first()
    if active is not None and (active.stats or {}).get("model_run") == run.pk:
        made_by = PrecomputeRun.objects.filter(recommendation_set=active).order_by("-pk").first()
        return True, format_html(
            _("Shoppers' lists come from this model: list set #{set}, made by {precompute}."),
            set=active.pk,
            precompute=_precompute_link(made_by) if made_by else _("a precompute"),
        )
    since = PrecomputeRun.objects.order_by("-created_at", "-pk")
    if run.activated_at is not None:
        since = since.filter(created_at__gte=run.activated_at)
    latest = since.first()
    if latest is None:
        text = _(
            "This model serves, but no precompute has run since it began to: shoppers still see the lists made "
            "before it. Run a precompute from the precompute runs page."
        )
        return False, format_html("{}", text)
    if latest.status in (PrecomputeRun.Status.PENDING, PrecomputeRun.Status.RUNNING):
        text = _(
            "This model serves, but shoppers still see the lists made before it until {precompute} has computed "
            "its lists ({status}, {progress}%); reload to follow."
        )
        return False, format_html(
            text,
            precompute=_precompute_link(latest),
            status=latest.get_status_display(),
            progress=round(100 * float(latest.progress)),
        )
    if latest.status == PrecomputeRun.Status.FAILED:
        text = _(
            "This model serves, but {precompute}, which was to compute its lists, failed: shoppers still see the "
            "lists made before it. Run a precompute from the precompute runs page."
        )
    else:
        text = _(
            "This model serves, but {precompute} did not make the lists from it (its page says why): shoppers see "
            "lists from another source."
        )
    return False, format_html(text, precompute=_precompute_link(latest))


def _precompute_link(run: PrecomputeRun) -> str:
    label = _("precompute run #%(pk)s") % {"pk": run.pk}
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:recommendations_precomputerun_change", args=[run.pk]), label
    )


# ---- training runs: the model registry ------------------------------------------------------------------------------

CANDIDATE_METRICS = (
    ("ndcg", "NDCG@10"),
    ("recall", "recall@10"),
    ("hr", "HR@10"),
    ("mrr", "MRR@10"),
    ("coverage", "coverage"),
    ("cold_recall", "cold recall@10"),
)
TRAINING_ACTIVE = (TrainingRun.Status.PENDING, TrainingRun.Status.RUNNING)


def _number(value: Any, digits: int = 4) -> str:
    """A metric for a table cell: fixed digits for numbers, '-' for anything missing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value in (None, "") else str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _flatten(stats: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested stats as (dotted key, value) rows, so one two-column table shows them all."""
    rows: list[tuple[str, str]] = []
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, _number(value, 3) if isinstance(value, float) else str(value)))
    return rows


def _key_value_table(rows: Any) -> str:
    return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    """Every retrain side by side; staff retrain now, activate any run with a sound artefact, or roll back in one click.

    Retrain needs the add permission, activate and roll back the change permission (`has_serve_permission`); a POST
    without it gets 403. Each is logged as a LogEntry on the run, so the run's history says who did what.
    """

    list_display = (
        "run",
        "status",
        "progress_percent",
        "stage",
        "chosen",
        "ndcg",
        "is_serving",
        "created_at",
        "duration",
        "task_state",
        "attempts_column",
    )
    list_display_links = ("run",)
    list_filter = ("status", "is_serving")
    actions = ["serve_model"]
    fieldsets = (
        (None, {"fields": ("status", "message", "error", "progress_percent", "stage", "task_id", "task_state")}),
        (gettext_lazy("Times"), {"fields": ("created_at", "started_at", "finished_at", "heartbeat_at", "duration")}),
        (gettext_lazy("Workers"), {"fields": ("worker", "attempts_column", "what_happened")}),
        (
            "Model",
            {
                "fields": (
                    "chosen",
                    "validation_ndcg",
                    "test_table",
                    "is_serving",
                    "activated_at",
                    "activated_by",
                    "activation",
                    "artefact_path",
                    "artefact_sha256",
                    "data_until",
                )
            },
        ),
        (gettext_lazy("Evaluation"), {"fields": ("evaluation_table",)}),
        (gettext_lazy("Candidates"), {"fields": ("candidate_table",)}),
        (gettext_lazy("Gate"), {"fields": ("gate_table",)}),
        (gettext_lazy("Data"), {"fields": ("data_table",)}),
        (gettext_lazy("Seconds per stage"), {"fields": ("timings_table",)}),
        (
            gettext_lazy("Raw JSON"),
            {
                "classes": ("collapse",),
                "fields": ("candidates", "test_metrics", "gate", "data_stats", "stage_seconds", "progress"),
            },
        ),
    )
    readonly_fields = tuple(f for _, options in fieldsets for f in options["fields"])
    change_list_template = "admin/recommendations/trainingrun/change_list.html"
    change_form_template = "admin/recommendations/trainingrun/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        def view(function: Any, route: str, name: str) -> URLPattern:
            return path(route, self.admin_site.admin_view(function), name=f"recommendations_trainingrun_{name}")

        return [
            view(self.retrain_now_view, "retrain-now/", "retrain_now"),
            view(self.rollback_view, "roll-back/", "roll_back"),
            view(self.activate_view, "<path:object_id>/activate/", "activate"),
            *super().get_urls(),
        ]

    def _operations_context(self, request: HttpRequest) -> dict[str, Any]:
        return {
            "can_retrain": self.has_retrain_permission(request),
            "can_serve": self.has_serve_permission(request),
            "beat_schedules": beat_schedules(
                request, RETRAIN_TASK, "Retrain the recommender (nightly)", queue="recommendations-training"
            ),
        }

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), **self._operations_context(request)}
        extra_context["metrics_chart"] = validation_metrics_chart()
        return super().changelist_view(request, extra_context)

    def has_retrain_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.add_trainingrun")

    def has_serve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.change_trainingrun")

    def retrain_now_view(self, request: HttpRequest) -> HttpResponse:
        """Retrain now (POST only): queued on the broker, or without one in a background process, never in this
        one (TensorFlow stays out of the web process); says which. Without the add permission a POST gets 403."""
        from recommendations.background import start_retrain

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_retrain_permission(request):
            raise PermissionDenied
        run, launch = start_retrain()
        report_launch(self, request, run, launch, "retrain")
        return HttpResponseRedirect(reverse("admin:recommendations_trainingrun_changelist"))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        from recommendations.training.runs import warning_lines

        run = self.get_object(request, unquote(object_id))
        extra_context = {
            **(extra_context or {}),
            "can_serve": self.has_serve_permission(request),
            "evaluation_warnings": warning_lines(run.data_stats or {}) if run else [],
            "lists_note": lists_note(run) if run else None,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def activate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The change page's "Activate" button: make this run's model serve (POST; 403 without the permission)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_serve_permission(request):
            raise PermissionDenied
        run = self.get_object(request, unquote(object_id))
        if run is None:
            raise Http404(_("No training run %(id)r.") % {"id": object_id})
        self._make_serve(request, run, "Activated this run's model")
        return HttpResponseRedirect(reverse("admin:recommendations_trainingrun_change", args=[run.pk]))

    def rollback_view(self, request: HttpRequest) -> HttpResponse:
        """The "Roll back" button: put back the model that served before the serving one (POST; 403 without it)."""
        from recommendations.training import runs

        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_serve_permission(request):
            raise PermissionDenied
        serving = TrainingRun.objects.filter(is_serving=True).first()
        target = runs.previous_model()
        if serving is None:
            self.message_user(
                request,
                _("No model serves, so there is nothing to roll back; activate a run instead."),
                messages.WARNING,
            )
        elif target is None:
            self.message_user(
                request,
                _("Nothing to roll back to: no other run served before run #%(pk)s. The serving model is unchanged.")
                % {"pk": serving.pk},
                messages.WARNING,
            )
        else:
            self._make_serve(request, target, "Rolled back to this run's model", prefix=_("Rolling back. "))
        return HttpResponseRedirect(reverse("admin:recommendations_trainingrun_changelist"))

    @admin.action(description=gettext_lazy("Serve this model (activate / roll back)"), permissions=["serve"])
    def serve_model(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Make the one selected run's model serve; its artefact is hash-checked and loaded first."""
        if queryset.count() != 1:
            self.message_user(request, _("Select exactly one training run to serve."), messages.ERROR)
            return
        self._make_serve(request, queryset.get(), "Made this run's model serve")

    def _make_serve(self, request: HttpRequest, run: TrainingRun, done: str, prefix: str = "") -> bool:
        """Start making `run`'s model serve and say truthfully what started (or why nothing did).

        Its artefact is hash-checked and loaded by a training worker or a background process, never here (a neural
        model would bring TensorFlow into the web process); that process records the outcome on the run, which its
        page shows, and logs a success under this user with `done` as the history's wording.
        """
        from recommendations.background import start_activation

        by = request.user.get_username()
        if run.is_serving:
            self.message_user(
                request, _("Run #%(pk)s already serves; nothing changed.") % {"pk": run.pk}, messages.WARNING
            )
            return False
        if not run.has_artefact:
            self.message_user(
                request,
                _("Run #%(pk)s was not activated: run #%(pk)s has no model to serve. The serving model is unchanged.")
                % {"pk": run.pk},
                messages.ERROR,
            )
            return False
        launch = start_activation(run.pk, by=by, user_id=request.user.pk, note=done)
        logger.info("%s asked for training run #%s to serve: %s", by, run.pk, launch.how)
        text = ACTIVATION_MESSAGES[launch.how] % {
            "run": _("Training run #%(pk)s") % {"pk": run.pk},
            "task": launch.task_id,
            "pid": launch.pid,
            "error": launch.error,
            "command": launch.command,
        }
        if launch.how == "failed":
            self.message_user(request, text, messages.ERROR)
            return False
        self.message_user(request, prefix + text, messages.SUCCESS)
        return True

    @admin.display(description=gettext_lazy("activation from the admin"))
    def activation(self, obj: TrainingRun) -> str:
        """Staff's newest request to make this run serve and how it ended (recorded by the process that loaded it)."""
        from recommendations.training.runs import activation_request

        request = activation_request(obj)
        if not request:
            return "-"
        state = request.get("state")
        asked = _("asked by %(who)s at %(when)s") % {
            "who": request.get("by") or _("staff"),
            "when": request.get("requested_at", "?"),
        }
        if state == "pending":
            return _("Being checked (%(asked)s): it serves once its model loads; reload to follow.") % {"asked": asked}
        if state == "activated":
            before = request.get("before")
            was = _("run #%(pk)s") % {"pk": before} if before is not None else _("no model")
            return _("Activated at %(when)s (%(asked)s); before it, %(was)s served.") % {
                "when": request.get("finished_at"),
                "asked": asked,
                "was": was,
            }
        if state == "not_started":
            return _(
                "Not activated (%(asked)s): %(reason)s. Run %(command)s instead. The serving model is unchanged."
            ) % {"asked": asked, "reason": request.get("reason"), "command": request.get("command")}
        return _("Refused at %(when)s (%(asked)s): %(reason)s. The serving model is unchanged.") % {
            "when": request.get("finished_at"),
            "asked": asked,
            "reason": request.get("reason"),
        }

    @admin.display(description=gettext_lazy("run"), ordering="pk")
    def run(self, obj: TrainingRun) -> str:
        return f"#{obj.pk}"

    @admin.display(description=gettext_lazy("progress"), ordering="progress")
    def progress_percent(self, obj: TrainingRun) -> str:
        return f"{obj.progress * 100:.0f}%"

    @admin.display(description=gettext_lazy("validation NDCG@10"), ordering="validation_ndcg")
    def ndcg(self, obj: TrainingRun) -> str:
        return _number(obj.validation_ndcg)

    @admin.display(description=gettext_lazy("duration"))
    def duration(self, obj: TrainingRun) -> str:
        if obj.started_at and obj.finished_at:
            return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"
        if obj.started_at and obj.status == TrainingRun.Status.RUNNING:
            return _("%(seconds)s s so far") % {"seconds": f"{(timezone.now() - obj.started_at).total_seconds():.0f}"}
        return "-"

    @admin.display(description=gettext_lazy("task state"))
    def task_state(self, obj: TrainingRun) -> str:
        """What Celery says about an unfinished run's task (needs a result backend; '-' without one)."""
        if not obj.task_id:
            return "-"
        if obj.status not in TRAINING_ACTIVE:
            # Finished runs carry their own outcome; asking the backend for every row would slow the list.
            return "FAILURE" if obj.status == TrainingRun.Status.FAILED else "SUCCESS"
        from celery import current_app
        from celery.result import AsyncResult

        from recommendations.tasks import runs_inline

        if runs_inline() or current_app.conf.task_always_eager:  # no broker or result backend to ask
            return "-"
        try:
            return AsyncResult(obj.task_id).state
        except Exception:
            return "-"

    @admin.display(description=gettext_lazy("attempts"), ordering="attempts")
    def attempts_column(self, obj: TrainingRun) -> str:
        return attempts_summary(obj)

    @admin.display(description=gettext_lazy("worker lost"))
    def what_happened(self, obj: TrainingRun) -> str:
        lines = takeover_lines(obj)
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines)) if lines else "-"

    @admin.display(description=gettext_lazy("candidates"))
    def candidate_table(self, obj: TrainingRun) -> str:
        """Every candidate's validation metrics, test NDCG and fit time in one table; the chosen row is marked."""
        if not obj.candidates:
            return "-"
        titles = [
            _("candidate"),
            *(_("validation %(metric)s") % {"metric": label} for _unused, label in CANDIDATE_METRICS),
        ]
        titles += [_("test NDCG@10"), _("fit seconds"), _("note")]
        head = format_html_join("", "<th>{}</th>", ((title,) for title in titles))
        rows = []
        for name, report in obj.candidates.items():
            validation, test, fit = report.get("validation") or {}, report.get("test") or {}, report.get("fit") or {}
            cells = [_number(validation.get(key)) for key, _ in CANDIDATE_METRICS]
            cells += [_number(test.get("ndcg")), _number(report.get("seconds"), 2)]
            if "skipped" in fit:
                note = _("left out: %(why)s") % {"why": fit["skipped"]}
            elif "weights" in report:
                note = _("weights %(weights)s") % {"weights": ", ".join(_number(w, 3) for w in report["weights"])}
            else:
                note = ""
            chosen = name == obj.chosen
            rows.append(
                format_html(
                    '<tr style="{}"><td>{}{}</td>{}<td>{}</td></tr>',
                    "font-weight:bold" if chosen else "",
                    name,
                    _(" ✔ chosen") if chosen else "",
                    format_html_join("", "<td>{}</td>", ((c,) for c in cells)),
                    note,
                )
            )
        return format_html(
            "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
            head,
            format_html_join("", "{}", ((r,) for r in rows)),
        )

    @admin.display(description=gettext_lazy("test metrics (chosen)"))
    def test_table(self, obj: TrainingRun) -> str:
        if not obj.test_metrics:
            return "-"
        return _key_value_table((key, _number(value)) for key, value in obj.test_metrics.items())

    @admin.display(description=gettext_lazy("gate verdict"))
    def gate_table(self, obj: TrainingRun) -> str:
        """Why the run serves or not: the reason, new vs serving NDCG@10 and the margin it had to clear."""
        gate = {key: value for key, value in (obj.gate or {}).items() if key != "activation"}  # that has its own row
        if not gate:
            return "-"
        verdict = {True: _("passed: serves"), False: _("failed: old model kept")}.get(gate.get("passed"), "-")
        serving = gate.get("serving_run")
        rows = [
            (_("verdict"), verdict),
            (_("reason"), gate.get("reason", "-")),
            (_("new NDCG@10"), _number(gate.get("new_ndcg"))),
            (_("serving NDCG@10"), _number(gate.get("serving_ndcg"))),
            (_("margin"), _number(gate.get("margin"))),
            (_("serving run then"), f"#{serving}" if serving is not None else "-"),
            (_("compared"), gate.get("compared", "-")),
        ]
        return _key_value_table(rows)

    @admin.display(description=gettext_lazy("evaluation"))
    def evaluation_table(self, obj: TrainingRun) -> str:
        """The split the run validated on and why, how the choice was made, and whether the sample could rank."""
        from recommendations.training.runs import choice_lines, split_line, warning_lines

        stats = obj.data_stats or {}
        if not stats:
            return "-"
        rows = [(_("split"), split_line(stats))]
        rows += [(_("choice"), line) for line in choice_lines(stats)]
        rows += [(_("warning"), line) for line in warning_lines(stats)]
        return _key_value_table(rows)

    @admin.display(description=gettext_lazy("data"))
    def data_table(self, obj: TrainingRun) -> str:
        if not obj.data_stats:
            return "-"
        return _key_value_table(_flatten(obj.data_stats))

    @admin.display(description=gettext_lazy("seconds per stage"))
    def timings_table(self, obj: TrainingRun) -> str:
        if not obj.stage_seconds:
            return "-"
        return _key_value_table((stage, _number(seconds, 2)) for stage, seconds in obj.stage_seconds.items())
