"""The health checks only the tasks' layer can make: whether tasks go to a broker at all (`tasks.task_mode`), the
broker answering (with its queue lengths) and a worker answering a ping, each within HEALTH_TIMEOUT_SECONDS.

`health.run_checks` asks for them through `signals.health_checks`, so the views that report health, which a page
request imports, never import the tasks (and through them, training). Connected when this module is imported, from
AppConfig.ready().
"""

from __future__ import annotations

import contextlib
from typing import Any

from celery import current_app
from django.utils.translation import gettext as _

from recommendations import signals, tasks
from recommendations.conf import rec_settings
from recommendations.health import Check, failure_message, timed


def _connection(timeout: float) -> Any:
    """A broker connection that gives up after `timeout` seconds instead of Celery's patient retries."""
    app = current_app._get_current_object()
    options = {
        **(app.conf.broker_transport_options or {}),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    return app.connection_for_read(connect_timeout=timeout, transport_options=options)


def queue_names() -> list[str]:
    """The queues the app's tasks go to: the Celery app's default queue and the training queue."""
    return list(dict.fromkeys([current_app.conf.task_default_queue or "celery", tasks.TRAINING_QUEUE]))


def _queue_length(conn: Any, queue: str) -> int:
    channel = conn.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except conn.channel_errors:
        return 0  # not declared yet: nothing was ever sent to it (a Redis list is gone once empty)
    finally:
        with contextlib.suppress(Exception):  # a channel the broker already closed (AMQP's answer to a passive 404)
            channel.close()


def check_broker(conn: Any, timeout: float) -> Check:
    conn.ensure_connection(
        max_retries=1, interval_start=0, interval_step=timeout, interval_max=timeout, timeout=timeout
    )
    queues = {queue: _queue_length(conn, queue) for queue in queue_names()}
    waiting = sum(queues.values())
    message = _("answers; %(count)s messages waiting") % {"count": waiting}
    return Check("broker", True, message, value=float(waiting), data={"queues": queues})


def check_worker(conn: Any, timeout: float) -> Check:
    replies = current_app.control.ping(timeout=timeout, connection=conn)
    workers = sorted(name for reply in replies or () for name in reply)
    if not workers:
        return Check("worker", False, _("no worker answered within %(seconds)s s") % {"seconds": timeout})
    return Check(
        "worker",
        True,
        _("%(count)s answered: %(names)s") % {"count": len(workers), "names": ", ".join(workers[:5])},
        value=float(len(workers)),
    )


def task_checks(sender: Any = None, **kwargs: Any) -> list[Check]:
    """The broker and a worker when tasks go to Celery; else one note saying the tasks run in-process."""
    if tasks.task_mode() != tasks.CELERY:
        return [Check("tasks", True, _("tasks run in this process, not on a broker: no worker to ask"))]
    timeout = float(rec_settings.HEALTH_TIMEOUT_SECONDS)
    try:
        conn = _connection(timeout)
    except Exception as exc:
        return [Check("broker", False, failure_message(exc)), _worker_not_asked()]
    with conn:
        broker = timed("broker", lambda: check_broker(conn, timeout))
        if not broker.ok:
            return [broker, _worker_not_asked()]
        return [broker, timed("worker", lambda: check_worker(conn, timeout))]


def _worker_not_asked() -> Check:
    return Check("worker", False, _("not asked: the broker cannot be reached"))


signals.health_checks.connect(task_checks, dispatch_uid="recommendations_task_health")
