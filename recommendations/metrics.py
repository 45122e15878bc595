"""The app's Prometheus metrics: what serving, ingest and the tasks count and time, and their exposition.

Every metric is defined here once, on prometheus_client's default registry, so a host that already exports that
registry (django-prometheus, its own view) exports ours too, and `recommendations.urls`' `metrics/` view exports them
without any middleware. This module sits at the bottom of the app's layers: serving, tracking, the API and the tasks
import it and call one function each; it imports nothing of the app.

Several processes (gunicorn workers, Celery's prefork children): set PROMETHEUS_MULTIPROC_DIR in the environment
of every process before it starts (a directory emptied at each deploy) and prometheus_client keeps each process'
values in a file there; `exposition()` then adds up every process' files, so any one web process answers for all of
them. Without it each process counts alone and a scrape sees the process that answered it. docs/operations.md
("Health and metrics") has the set-up.

What is measured at scrape time (the model's and the list set's age, the queue lengths, each health check) is not a
metric here: `recommendations.health` reads it when asked and hands it to `exposition()` as an extra collector.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

PREFIX = "recommendations"

# A block takes a few milliseconds to build, a cached one well under one; the budget (SERVING_BUDGET_MS) is 150 ms.
SERVING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# A refresh takes milliseconds, a precompute minutes, a retrain up to hours.
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)

OUTCOMES = ("cached", "built", "degraded", "fallback")
"""How a block was served: from the block cache; built; built past its time budget (filled from the shared lists);
or answered by the safe fallback after an error (the log has it)."""

SERVING_SECONDS = Histogram(
    f"{PREFIX}_serving_seconds",
    "Time to serve one recommendation block, by placement and outcome (cached, built, degraded, fallback).",
    ["placement", "outcome"],
    buckets=SERVING_BUCKETS,
)
BLOCKS = Counter(
    f"{PREFIX}_blocks",
    "Blocks served, by placement and where their items came from: stored (the block's own candidates, topped up) or "
    "fallback (the fallback chain alone, e.g. a new visitor's).",
    ["placement", "source"],
)
EVENTS_ACCEPTED = Counter(
    f"{PREFIX}_events_accepted", "Events stored, by path (api, record_event, impression).", ["via"]
)
EVENTS_DUPLICATED = Counter(
    f"{PREFIX}_events_duplicated",
    "Events not stored because their event_id was already stored (a client's retry), by path.",
    ["via"],
)
EVENTS_REFUSED = Counter(
    f"{PREFIX}_events_refused",
    "Events refused one by one, by path and reason (invalid: a field at fault; error: the write failed). A request "
    "refused whole is counted in recommendations_ingest_requests_total by its status.",
    ["via", "reason"],
)
INGEST_REQUESTS = Counter(
    f"{PREFIX}_ingest_requests", "Requests to the ingest API, by HTTP status of the answer.", ["status"]
)
TASK_SECONDS = Histogram(
    f"{PREFIX}_task_seconds",
    "Duration of the app's Celery tasks (inline runs included), by task and final state.",
    ["task", "state"],
    buckets=TASK_BUCKETS,
)
TASK_FAILURES = Counter(f"{PREFIX}_task_failures", "The app's tasks that raised, by task.", ["task"])


# -- what the app calls ------------------------------------------------------------------------------------------------


_block_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def observe_block(placement: str, outcome: str, source: str, started: float) -> None:
    """A block was served: its time since `started` (time.perf_counter()) and where its items came from.

    The labelled children are kept per (placement, outcome, source), a few dozen at most: looking them up through
    `labels()` each time cost more than the observation itself, on every block served.
    """
    elapsed = time.perf_counter() - started
    key = (placement, outcome, source)
    children = _block_children.get(key)
    if children is None:
        children = (
            SERVING_SECONDS.labels(placement, outcome),
            BLOCKS.labels(placement, "fallback" if source == "fallback" else "stored"),
        )
        _block_children[key] = children
    children[0].observe(elapsed)
    children[1].inc()


def count_events(via: str, *, accepted: int = 0, duplicated: int = 0, refused: int = 0, reason: str = "") -> None:
    """Events through one path (`via`: api, record_event, impression): stored, skipped as duplicates, refused."""
    if accepted:
        EVENTS_ACCEPTED.labels(via).inc(accepted)
    if duplicated:
        EVENTS_DUPLICATED.labels(via).inc(duplicated)
    if refused:
        EVENTS_REFUSED.labels(via, reason or "invalid").inc(refused)


def ingest_answered(status: int, data: Any) -> None:
    """The ingest API answered `status` with the batch answer `data` ({"accepted", "duplicates", "errors"})."""
    INGEST_REQUESTS.labels(str(status)).inc()
    if not isinstance(data, dict):
        return
    # An event with several fields at fault has several errors; one without an index is the whole request's.
    refused = len({e.get("index") for e in data.get("errors") or () if isinstance(e, dict)} - {None})
    count_events(
        "api",
        accepted=int(data.get("accepted") or 0),
        duplicated=int(data.get("duplicates") or 0),
        refused=refused,
        reason="invalid",
    )


# -- Celery tasks: timed through Celery's own signals, so no task is wrapped ------------------------------------------

TASK_PREFIX = f"{PREFIX}.tasks."
_started: dict[str, float] = {}
_started_lock = threading.Lock()
MAX_OPEN_TASKS = 10_000  # a task whose postrun never came (its process died) must not grow this for ever


def _task_name(task: Any) -> str:
    name = getattr(task, "name", "") or ""
    return name[len(TASK_PREFIX) :] if name.startswith(TASK_PREFIX) else ""


def _on_task_prerun(sender: Any = None, task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    if not _task_name(task or sender):
        return
    with _started_lock:
        if len(_started) >= MAX_OPEN_TASKS:
            _started.clear()
        _started[task_id] = time.perf_counter()


def _on_task_postrun(sender: Any = None, task_id: str = "", task: Any = None, state: str = "", **kwargs: Any) -> None:
    name = _task_name(task or sender)
    with _started_lock:
        started = _started.pop(task_id, None)
    if name and started is not None:
        TASK_SECONDS.labels(name, (state or "UNKNOWN").lower()).observe(time.perf_counter() - started)


def _on_task_failure(sender: Any = None, **kwargs: Any) -> None:
    name = _task_name(sender)
    if name:
        TASK_FAILURES.labels(name).inc()


def connect_task_signals() -> None:
    """Time the app's tasks (task_prerun / task_postrun) and count their failures (task_failure); called once at
    start-up (AppConfig.ready), in web processes and workers alike, since inline runs are tasks too."""
    from celery import signals as celery_signals

    celery_signals.task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="recommendations_metrics_prerun")
    celery_signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="recommendations_metrics_postrun")
    celery_signals.task_failure.connect(_on_task_failure, weak=False, dispatch_uid="recommendations_metrics_failure")


# -- exposition --------------------------------------------------------------------------------------------------------


def multiprocess_dir() -> str:
    """The directory prometheus_client's multiprocess mode writes to, or "" when each process counts alone."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or ""
    return path if path and os.path.isdir(path) else ""


class _Together:
    """One collector of several, so a scrape is one exposition (one `# EOF` in OpenMetrics)."""

    def __init__(self, sources: Iterable[Any]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[Any]:
        for source in self.sources:
            yield from source.collect()


def _counted() -> Any:
    """What the processes counted: every process' files in multiprocess mode, else this process' registry."""
    path = multiprocess_dir()
    return MultiProcessCollector(None, path=path) if path else REGISTRY


def exposition(accept: str = "", extra: Iterable[Any] = ()) -> tuple[bytes, str]:
    """The scrape's body and content type (text or OpenMetrics, as `accept` asks), with the `extra` collectors'
    families after the counted ones."""
    encoder, content_type = choose_encoder(accept)
    return encoder(_Together([_counted(), *extra])), content_type


def totals(prefix: str = PREFIX) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The current samples of the app's metrics, by sample name (`recommendations_blocks_total`, ...): the admin's
    status page reads its "since the metrics started" figures here."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in _counted().collect():
        if not family.name.startswith(prefix):
            continue
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return found
