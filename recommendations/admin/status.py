"""*Recommendations > System status*: at a glance, what the `health/` view and the `metrics/` scrape say.

The same checks (`health.run_checks`), then the facts an operator asks first: the serving model, the last training
run, the last precompute and the active list set with their ages, the queue lengths, today's events, and what the
counters say since they started (blocks from the fallback, events refused and duplicated, failed tasks). Linked from
the app's admin index (`admin/recommendations/app_index.html`); any staff member may see it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _

from recommendations import health, metrics
from recommendations.models import Event, PrecomputeRun, RecommendationSet, TrainingRun


def _sum(samples: list[tuple[dict[str, str], float]], **match: str) -> float:
    return sum(value for labels, value in samples if all(labels.get(k) == v for k, v in match.items()))


def _by(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for labels, value in samples:
        found[labels.get(label, "")] = found.get(labels.get(label, ""), 0.0) + value
    return found


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def counted_figures() -> dict[str, Any]:
    """The counters' figures, since the metrics started (every process' with PROMETHEUS_MULTIPROC_DIR, else this
    web process' own)."""
    samples = metrics.totals()
    blocks = samples.get("recommendations_blocks_total", [])
    served = _sum(blocks)
    counts = samples.get("recommendations_serving_seconds_count", [])
    seconds = samples.get("recommendations_serving_seconds_sum", [])
    outcomes = []
    for outcome in metrics.OUTCOMES:
        n = _sum(counts, outcome=outcome)
        mean_ms = 1000 * _sum(seconds, outcome=outcome) / n if n else None
        outcomes.append({"outcome": outcome, "count": int(n), "share": _share(n, served), "mean_ms": mean_ms})
    by_kind = {
        kind: _by(samples.get(f"recommendations_events_{kind}_total", []), "via")
        for kind in ("accepted", "duplicated", "refused")
    }
    events = [
        {"via": via, **{kind: int(counted.get(via, 0)) for kind, counted in by_kind.items()}}
        for via in sorted(set().union(*by_kind.values()))
    ]
    task_counts = _by(samples.get("recommendations_task_seconds_count", []), "task")
    failures = _by(samples.get("recommendations_task_failures_total", []), "task")
    tasks = [
        {"task": task, "runs": int(task_counts.get(task, 0)), "failures": int(failures.get(task, 0))}
        for task in sorted(set(task_counts) | set(failures))
    ]
    return {
        "all_processes": bool(metrics.multiprocess_dir()),
        "blocks_served": int(served),
        "fallback_blocks": int(_sum(blocks, source="fallback")),
        "fallback_share": _share(_sum(blocks, source="fallback"), served),
        "outcomes": outcomes,
        "events": events,
        "requests": sorted(
            (status, int(n))
            for status, n in _by(samples.get("recommendations_ingest_requests_total", []), "status").items()
        ),
        "tasks": tasks,
    }


def system_status(now: datetime | None = None) -> dict[str, Any]:
    """Everything the page shows, as template context."""
    now = now or timezone.now()
    report = health.run_checks()
    serving = TrainingRun.objects.filter(is_serving=True).first()
    last_training = TrainingRun.objects.order_by("-created_at", "-pk").first()
    last_precompute = PrecomputeRun.objects.order_by("-created_at", "-pk").first()
    last_good_precompute = (
        PrecomputeRun.objects.filter(status=PrecomputeRun.Status.SUCCEEDED, finished_at__isnull=False)
        .order_by("-finished_at", "-pk")
        .first()
    )
    active_set = (
        RecommendationSet.objects.filter(status=RecommendationSet.Status.ACTIVE)
        .order_by("-activated_at", "-pk")
        .first()
    )
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    today = dict(
        Event.objects.filter(occurred_at__gte=midnight)
        .order_by()
        .values("event_type")
        .annotate(n=Count("id"))
        .values_list("event_type", "n")
    )
    broker = report.get("broker")
    return {
        "report": report,
        "checks": [
            {"name": c.name, "ok": c.ok, "message": c.message, "ms": round(c.seconds * 1000, 1)} for c in report.checks
        ],
        "serving": serving,
        "serving_trained": (serving.finished_at or serving.activated_at) if serving else None,
        "last_training": last_training,
        "last_precompute": last_precompute,
        "last_good_precompute": last_good_precompute,
        "active_set": active_set,
        "queues": sorted((broker.data.get("queues") or {}).items()) if broker is not None else [],
        "events_today": sorted(today.items()),
        "events_today_total": sum(today.values()),
        "midnight": midnight,
        **counted_figures(),
    }


def status_view(model_admin: Any, request: HttpRequest) -> TemplateResponse:
    """The page; `model_admin` is the admin whose URLs hold it (precompute runs), for the site's context."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("System status"),
        "opts": model_admin.model._meta,
        **system_status(),
    }
    return TemplateResponse(request, "admin/recommendations/status.html", context)
