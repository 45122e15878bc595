"""What waits for the response to go out: the impressions of the blocks a page rendered, stored in one INSERT, and
the tasks `after_response` took (caching the blocks the page built)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from recommendations import metrics
from recommendations.tracking.consent import may_track
from recommendations.tracking.events import build_event, insert_events
from recommendations.tracking.identity import get_user_id, get_visitor_id

logger = logging.getLogger(__name__)


IMPRESSIONS_ATTR = "_recommendations_impressions"


def queue_impression(request: HttpRequest | None, block: Any, shopper: str | None = None) -> None:
    """Note that `block` was rendered for this request; stored in one INSERT once the response has gone out.

    `shopper` ("u:<id>" / "v:<id>") names whom it was rendered for when that is not the requester (a server
    rendering a shopper's block through the API with the write key).
    """
    if request is None or not getattr(block, "items", None):
        return
    if shopper:
        kind, _, key = shopper.partition(":")
        user_id, visitor_id = (key, "") if kind == "u" else ("", key)
    elif may_track(request):
        user_id, visitor_id = get_user_id(request), get_visitor_id(request)
    else:
        return  # no consent: no impression either (it would be an event about them)
    event = build_event(
        "impression",
        user_id=user_id,
        visitor_id=visitor_id,
        placement=block.placement,
        recommendation_id=block.recommendation_id,
        variant=getattr(block, "variant", "") or "",  # the experiment arm serving stamped on the block, if any
        context={
            "items": [item.product_id for item in block.items],
            "sources": [item.source for item in block.items],
        },
    )
    pending = request.__dict__.setdefault(IMPRESSIONS_ATTR, [])
    pending.append(event)


def flush_impressions(request: HttpRequest) -> int:
    """Store the impressions queued on `request`; returns how many."""
    pending = request.__dict__.pop(IMPRESSIONS_ATTR, None)
    if not pending:
        return 0
    try:
        stored = len(insert_events(pending))
    except Exception:
        logger.exception("could not store %d impressions", len(pending))
        metrics.count_events("impression", refused=len(pending), reason="error")
        return 0
    metrics.count_events("impression", accepted=stored, duplicated=len(pending) - stored)
    return stored


AFTER_RESPONSE_ATTR = "_recommendations_after_response"


def after_response(request: HttpRequest | None, task: Callable[[], Any]) -> bool:
    """Run `task` once the response has gone out, with the impressions; False when nothing will (the request did not
    come through VisitorMiddleware): the caller then does it at once."""
    tasks = request.__dict__.get(AFTER_RESPONSE_ATTR) if request is not None else None
    if tasks is None:
        return False
    tasks.append(task)
    return True


def finish_request(request: HttpRequest) -> None:
    """What waits for the response to go out: the tasks `after_response` took (caching the blocks the page built),
    then the impressions."""
    for task in request.__dict__.pop(AFTER_RESPONSE_ATTR, None) or []:
        try:
            task()
        except Exception:
            logger.exception("a task after the response failed")
    flush_impressions(request)


def finish_on_close(request: HttpRequest, response: HttpResponse) -> None:
    """The WSGI/ASGI server closes a response after sending it: `finish_request` runs then, off the page's time. A
    response that is never closed (a crashed server) loses its impressions, which is the price of not waiting."""
    if not request.__dict__.get(IMPRESSIONS_ATTR) and not request.__dict__.get(AFTER_RESPONSE_ATTR):
        return
    close = response.close

    def finish_then_close() -> None:
        # Before close(): it ends the request (request_finished), which may close the database connection.
        finish_request(request)
        close()

    response.close = finish_then_close  # type: ignore[method-assign]
