"""Recording what shoppers do: who they are (identity), what they did (events), which blocks they were shown
(impressions) and which block an event owes to (attribution); `middleware` holds the `VisitorMiddleware` a host adds.

A host shop calls `record_event(request, "view", product_id=...)` from its views; the JS tracker and back-end
integrations go through the ingest API, which ends up in `store_events` too. Every name callers read as
`tracking.X` is re-exported here; the package's modules import each other, never this `__init__`.
"""

from recommendations.models import shopper_key
from recommendations.tracking.attribution import ATTRIBUTED_TYPES, attribute
from recommendations.tracking.consent import Consent, consent_of, current_request, may_track
from recommendations.tracking.events import (
    EVENT_COLUMNS,
    INSERT_BATCH,
    build_event,
    insert_events,
    on_event_recorded,
    on_events_stored,
    record_event,
    store_events,
)
from recommendations.tracking.identity import (
    CAMPAIGN_COOKIE,
    CAMPAIGN_PATTERN,
    VISITOR_ATTR,
    forget_visitor,
    get_shopper,
    get_user_id,
    get_visitor_id,
    merge_visitor,
    new_visitor_id,
    on_user_logged_in,
    valid_visitor_id,
)
from recommendations.tracking.impressions import (
    AFTER_RESPONSE_ATTR,
    IMPRESSIONS_ATTR,
    after_response,
    finish_request,
    flush_impressions,
    queue_impression,
)
from recommendations.tracking.middleware import VisitorMiddleware

__all__ = [
    "AFTER_RESPONSE_ATTR",
    "ATTRIBUTED_TYPES",
    "CAMPAIGN_COOKIE",
    "CAMPAIGN_PATTERN",
    "EVENT_COLUMNS",
    "IMPRESSIONS_ATTR",
    "INSERT_BATCH",
    "VISITOR_ATTR",
    "Consent",
    "VisitorMiddleware",
    "after_response",
    "attribute",
    "build_event",
    "consent_of",
    "current_request",
    "finish_request",
    "flush_impressions",
    "forget_visitor",
    "get_shopper",
    "get_user_id",
    "get_visitor_id",
    "insert_events",
    "may_track",
    "merge_visitor",
    "new_visitor_id",
    "on_event_recorded",
    "on_events_stored",
    "on_user_logged_in",
    "queue_impression",
    "record_event",
    "shopper_key",
    "store_events",
    "valid_visitor_id",
]
