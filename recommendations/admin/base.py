"""What the admin's screens share: the read-only ModelAdmin for rows the engine and tracking write, the
django-celery-beat schedules box, the report of a run started from the admin and what happened to a run whose worker
was lost (training and precompute both)."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.formats import localize
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

logger = logging.getLogger(__name__)


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: the rows come from the engine and tracking, never from a form."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _admin_url(name: str, *args: Any) -> str:
    """An admin URL, or "" when that admin is not registered (a host may leave django-celery-beat's admin out)."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def beat_schedules(request: HttpRequest, task: str, suggested_name: str, queue: str = "") -> dict[str, Any]:
    """The django-celery-beat rows that send `task`, for a changelist's "Schedules" box, each linked to its admin page.

    Links show only to staff who may see (or add) periodic tasks; with none, a link to add one comes pre-filled.
    """
    from django_celery_beat.models import PeriodicTask

    user = request.user
    may_view = user.has_perm("django_celery_beat.view_periodictask") or user.has_perm(
        "django_celery_beat.change_periodictask"
    )
    rows = []
    periodic_tasks = PeriodicTask.objects.filter(task=task).select_related("interval", "crontab", "solar", "clocked")
    for periodic in periodic_tasks.order_by("name"):
        schedule = periodic.interval or periodic.crontab or periodic.solar or periodic.clocked
        rows.append(
            {
                "name": periodic.name,
                "schedule": str(schedule) if schedule else _("no schedule"),
                "in_words": periodic.crontab.human_readable if periodic.crontab else "",
                "enabled": periodic.enabled,
                "one_off": periodic.one_off,
                "last_run_at": periodic.last_run_at,
                "runs": periodic.total_run_count,
                "url": _admin_url("admin:django_celery_beat_periodictask_change", periodic.pk) if may_view else "",
            }
        )
    add_url = ""
    if user.has_perm("django_celery_beat.add_periodictask"):
        add_url = _admin_url("admin:django_celery_beat_periodictask_add")
        if add_url:
            # Names are unique: a second schedule gets its name from staff.
            name = "" if rows else suggested_name
            add_url += "?" + urlencode({"name": name, "regtask": task, "queue": queue, "enabled": "on"})
    return {"task": task, "rows": rows, "add_url": add_url}


# ---- starting runs from the admin ------------------------------------------------------------------------------------

LAUNCH_MESSAGES = {
    "queued": gettext_lazy("%(run)s queued (task %(task)s). Its progress shows below; reload to follow."),
    "background": gettext_lazy(
        "%(run)s started in a background process (pid %(pid)s); this page shows its progress, reload to follow."
    ),
    "deferred": gettext_lazy(
        "%(run)s will start in a background process once this request's changes are saved; this page shows its "
        "progress, reload to follow."
    ),
    "failed": gettext_lazy(
        "%(run)s was not started: no background process could be started (%(error)s). Run %(command)s instead."
    ),
}
LAUNCH_LOG = {
    "queued": "Queued a %s from the admin.",
    "background": "Started a %s in a background process from the admin.",
    "deferred": "Started a %s in a background process from the admin.",
    "failed": "Could not start a %s from the admin: no background process could be started.",
}


def report_launch(model_admin: admin.ModelAdmin, request: HttpRequest, run: Any, launch: Any, kind: str) -> None:
    """Say what starting `run` really did: queued on the broker, running in a background process, or not started
    (and the command to run instead); log it in the server log and the admin history under the user."""
    name = _("Training run #%(pk)s") if kind == "retrain" else _("Precompute run #%(pk)s")
    text = LAUNCH_MESSAGES[launch.how] % {
        "run": name % {"pk": run.pk},
        "task": run.task_id,
        "pid": launch.pid,
        "error": launch.error,
        "command": launch.command,
    }
    logger.info("%s run #%s from the admin by %s: %s", kind, run.pk, request.user.get_username(), launch.how)
    model_admin.log_addition(request, run, LAUNCH_LOG[launch.how] % kind)
    model_admin.message_user(request, text, messages.ERROR if launch.how == "failed" else messages.SUCCESS)


def _when(iso: str | None) -> str:
    moment = parse_datetime(iso) if iso else None
    return localize(timezone.localtime(moment)) if moment else ""


def takeover_lines(run: Any) -> list[str]:
    """What happened to a run whose worker was lost: one sentence per takeover (training.liveness records them)."""
    lines = []
    for record in run.takeovers or []:
        values = {
            "at": _when(record.get("at")),
            "attempt": record.get("attempt"),
            "worker": record.get("lost_worker") or _("an unknown worker"),
            "stage": record.get("stage") or _("the start"),
            "seen": _when(record.get("last_heartbeat")) or _("never"),
        }
        if record.get("gave_up"):
            text = _(
                "Gave up at %(at)s: worker %(worker)s was lost at stage %(stage)s (last heartbeat %(seen)s), and the "
                "run had no attempts left."
            )
        else:
            text = _(
                "Taken over at %(at)s (attempt %(attempt)s): worker %(worker)s was lost at stage %(stage)s (last "
                "heartbeat %(seen)s)."
            )
        lines.append(text % values)
    return lines


def attempts_summary(run: Any) -> str:
    """The run list's "attempts" cell: the count, and when the worker was lost, the last takeover's time."""
    if not run.takeovers:
        return str(run.attempts) if run.attempts else "-"
    return _("%(attempts)s (worker lost; taken over at %(at)s)") % {
        "attempts": run.attempts,
        "at": _when(run.takeovers[-1].get("at")),
    }
