"""Checking one inbound event of an ingest batch and turning it into an unsaved `Event`.

Not a DRF Serializer on purpose: a batch holds up to 500 events, and a declarative serializer with these twelve
fields costs about 210 µs per event on the reference machine against about 10 µs here, which is most of the CPU
budget behind the ingest target (docs/benchmarks.md). Each problem is reported as
`{"index": i, "field": name, "message": text}` so a client can tell which event and which field to fix.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.utils.translation import gettext as _

from recommendations.conf import EVENT_TYPES, rec_settings
from recommendations.models import Event
from recommendations.tracking import build_event

# How far ahead of the server clock a client's timestamp may be before we stop believing it. The other end of the
# window is RECOMMENDATIONS["EVENT_MAX_AGE_DAYS"] (`oldest_event_time`).
CLOCK_SKEW = timedelta(minutes=5)
MAX_CONTEXT_BYTES = 2048
MAX_ID_LENGTH = 64
MAX_PLACEMENT_LENGTH = 40
MAX_QUANTITY = 2**31 - 1  # the column is a 32-bit integer
MAX_VALUE = Decimal("9999999999.99")  # DecimalField(max_digits=12, decimal_places=2)
MAX_QUERY_LENGTH = 10_000
# A value sent as a string: plain digits, as the schema says; "1e3", " 5" or "+5" would be read by Decimal but are
# not what a client meant to send, and a schema cannot describe everything Decimal accepts.
DECIMAL_STRING = re.compile(r"[0-9]{1,10}(\.[0-9]+)?")
CENTS = Decimal("0.01")
NEEDS_PRODUCT = frozenset({"view", "add_to_cart", "remove_from_cart", "purchase", "favorite", "impression", "click"})
NEEDS_PLACEMENT = frozenset({"impression", "click"})
_EVENT_TYPES = frozenset(EVENT_TYPES)
_UNIX_STRING = re.compile(r"^-?\d{1,12}(\.\d{1,9})?$")
# What PostgreSQL cannot store in text or jsonb: NUL, and a lone UTF-16 surrogate (valid in a JSON string as \ud800,
# not in UTF-8). json.loads joins a proper pair into one character, so any surrogate left in a str is a lone one.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

ErrorDict = dict[str, Any]


@dataclass(frozen=True)
class Identity:
    """Whom a request may write events for.

    A browser (trusted=False) writes only for its own shopper, whose ids are filled into every event.
    A server holding the write key (trusted=True) names the shopper in each event.
    """

    trusted: bool
    user_id: str = ""
    visitor_id: str = ""


def as_error_list(response: Any, exc: Exception) -> Any:
    """A DRF error response in the app's one refusal shape: `{"errors": [{"field", "message"}], "detail"}`."""
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    if detail is not None:
        response.data = {"errors": [{"field": getattr(exc, "field", None), "message": str(detail)}], "detail": detail}
    return response


def oldest_event_time(now: datetime) -> datetime:
    """The earliest timestamp an event may carry: EVENT_MAX_AGE_DAYS before `now`.

    Without a floor a client could store a time PostgreSQL keeps but Python cannot read (1 BC), and every
    training and precompute that reads it would stop; history older than the window says nothing about today anyway.
    """
    return now - timedelta(days=float(rec_settings.EVENT_MAX_AGE_DAYS))


def too_old(moment: datetime, oldest: datetime) -> str:
    """The message for a timestamp before `oldest` (shared by the API and import_events)."""
    return _("%(moment)s is before %(oldest)s, the oldest time accepted (EVENT_MAX_AGE_DAYS is %(days)s days)") % {
        "moment": moment.isoformat(),
        "oldest": oldest.date().isoformat(),
        "days": rec_settings.EVENT_MAX_AGE_DAYS,
    }


def parse_timestamp(raw: Any) -> datetime:
    """ISO-8601 (naive means UTC) or Unix seconds as a number or a digit string, in UTC; ValueError otherwise.

    Normalised to UTC here so a time that exists only with its offset (0001-01-01T00:00:00+05:00 is 1 BC in UTC,
    which the database would store and Python could never read back) is refused as out of range.
    """
    if isinstance(raw, bool):
        raise ValueError(_("must be an ISO-8601 string or Unix seconds"))
    if isinstance(raw, str) and _UNIX_STRING.match(raw.strip()):
        raw = float(raw)
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise ValueError(_("must be a finite number of Unix seconds"))
        try:
            return datetime.fromtimestamp(raw, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(_("is not a Unix time in seconds")) from None
    if isinstance(raw, str):
        if len(raw) > 64:
            raise ValueError(_("is too long for a timestamp"))
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise ValueError(_("is not an ISO-8601 date-time or Unix seconds")) from None
        if not parsed.tzinfo:
            return parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValueError(_("is out of range: in UTC it falls outside the years 1 to 9999")) from None
    raise ValueError(_("must be an ISO-8601 string or Unix seconds"))


def _text(raw: Any, limit: int, *, allow_int: bool = False) -> str:
    """A short string field; ints are accepted where hosts commonly send numeric ids."""
    if allow_int and isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise ValueError(_("must be a string"))
    if len(raw) > limit:
        raise ValueError(_("must be at most %(most)s characters") % {"most": limit})
    check_storable(raw)
    return raw


def check_storable(text: str) -> None:
    """Refuse text the database would refuse: one such event must cost only itself, not its whole batch."""
    found = UNSTORABLE.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise ValueError(_("must not contain the NUL character (U+0000)"))
    raise ValueError(_("must not contain a lone surrogate (U+D800 to U+DFFF): it is not valid Unicode text"))


def _quantity(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(_("must be a whole number"))
    if not 1 <= raw <= MAX_QUANTITY:
        raise ValueError(_("must be between 1 and %(most)s") % {"most": MAX_QUANTITY})
    return raw


def _value(raw: Any) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(_("must be a decimal number"))
    if isinstance(raw, str) and not DECIMAL_STRING.fullmatch(raw):
        raise ValueError(_("must be a JSON number or a string of digits such as 12.50"))
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(_("must be a decimal number")) from None
    if not value.is_finite():
        raise ValueError(_("must be a finite decimal number"))
    if value < 0:
        raise ValueError(_("must not be negative"))
    if value > MAX_VALUE:
        raise ValueError(_("must be at most %(most)s") % {"most": MAX_VALUE})
    return value.quantize(CENTS, rounding=ROUND_HALF_UP)


def _context(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(_("must be an object"))
    # "surrogatepass": a lone surrogate is refused below with its own message, not as an encoding error.
    size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_CONTEXT_BYTES:
        raise ValueError(
            _("is %(size)s bytes of JSON; at most %(most)s are kept") % {"size": size, "most": MAX_CONTEXT_BYTES}
        )
    # Every key and string inside, at any depth; a loop, not recursion: 2 KB of "[[[[" nests a thousand deep.
    pending: list[Any] = [raw]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            check_storable(value)
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return raw


def _shopper(raw: dict[str, Any], identity: Identity, problem: Any) -> tuple[str, str]:
    """The (user_id, visitor_id) the event is stored under, after checking the request may write for them."""
    ids: dict[str, str] = {}
    for name in ("user_id", "visitor_id"):
        value = raw.get(name)
        if value is None or value == "":
            ids[name] = ""
            continue
        try:
            ids[name] = _text(value, MAX_ID_LENGTH, allow_int=True)
        except ValueError as exc:
            problem(name, str(exc))
            ids[name] = ""
    if identity.trusted:
        if not (ids["user_id"] or ids["visitor_id"] or raw.get("user_id") or raw.get("visitor_id")):
            problem("user_id", _("a request with the write key must name user_id or visitor_id in every event"))
        return ids["user_id"], ids["visitor_id"]
    own = {"user_id": identity.user_id, "visitor_id": identity.visitor_id}
    for name, value in ids.items():
        if value and value != own[name]:
            problem(
                name,
                _("this %(field)s is not yours: a browser may only send events of its own shopper") % {"field": name},
            )
    return identity.user_id, identity.visitor_id


def _required_for(event_type: str) -> str:
    return _("is required for %(type)s events") % {"type": event_type}


def validate_event(raw: Any, index: int, identity: Identity, now: datetime) -> tuple[Event | None, list[ErrorDict]]:
    """The unsaved Event for one inbound item, or None and every problem found in it."""
    errors: list[ErrorDict] = []

    def problem(field: str | None, message: str) -> None:
        errors.append({"index": index, "field": field, "message": message})

    if not isinstance(raw, dict):
        problem(None, _("each event must be a JSON object"))
        return None, errors

    def optional(name: str, check: Any, default: Any) -> Any:
        value = raw.get(name)
        if value is None:
            return default
        try:
            return check(value)
        except ValueError as exc:
            problem(name, str(exc))
            return default

    event_type = raw.get("event_type")
    if event_type is None:
        problem("event_type", _("this field is required"))
    elif not isinstance(event_type, str) or event_type not in _EVENT_TYPES:
        problem("event_type", _("must be one of: %(types)s") % {"types": ", ".join(EVENT_TYPES)})
        event_type = None

    event_id = optional("event_id", lambda v: _text(v, MAX_ID_LENGTH), None)
    if event_id == "":
        problem("event_id", _("must not be empty (leave it out to have one generated)"))
    product_id = optional("product_id", lambda v: _text(v, MAX_ID_LENGTH, allow_int=True).strip(), "")
    if event_type in NEEDS_PRODUCT and not product_id and not any(e["field"] == "product_id" for e in errors):
        problem("product_id", _required_for(event_type))
    quantity = optional("quantity", _quantity, 1)
    value = optional("value", _value, None)
    query = optional("query", lambda v: _text(v, MAX_QUERY_LENGTH), "")
    if event_type == "search" and not query.strip() and not any(e["field"] == "query" for e in errors):
        problem("query", _required_for("search"))
    placement = optional("placement", lambda v: _text(v, MAX_PLACEMENT_LENGTH), "")
    recommendation_id = optional("recommendation_id", lambda v: _text(v, MAX_ID_LENGTH), "")
    if event_type in NEEDS_PLACEMENT:
        if not placement and not any(e["field"] == "placement" for e in errors):
            problem("placement", _required_for(event_type))
        if not recommendation_id and not any(e["field"] == "recommendation_id" for e in errors):
            problem("recommendation_id", _required_for(event_type))
    context = optional("context", _context, {})
    client_time = optional("timestamp", parse_timestamp, None)
    if client_time is not None and client_time < (oldest := oldest_event_time(now)):
        problem("timestamp", too_old(client_time, oldest))
    user_id, visitor_id = _shopper(raw, identity, problem)

    if errors:
        return None, errors
    # A clock far ahead is not believed, but the event itself is still worth keeping.
    occurred_at = client_time if client_time is not None and client_time <= now + CLOCK_SKEW else now
    event = build_event(
        event_type,
        user_id=user_id,
        visitor_id=visitor_id,
        product_id=product_id,
        quantity=quantity,
        value=value,
        query=query,
        placement=placement,
        recommendation_id=recommendation_id,
        context=context,
        event_id=event_id,
        occurred_at=occurred_at,
        client_time=client_time,
    )
    event.received_at = now
    return event, errors
