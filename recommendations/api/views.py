"""The API: the ingest endpoint (events in) and the recommendations endpoint (blocks out).

Ingest takes batches of events from the JS tracker and from server-side integrations. A batch is checked event by
event; valid events are stored even when others in the batch are not. The work per request is fixed whatever the
batch size: one query for known products, one INSERT for the events.

Recommendations answers one placement's block as JSON, through the same serving pipeline as the template tags, and
records the impression the same way, so clicks an API client sends back with the block's recommendation_id count.
Unlike a tag, which renders nothing when the database is down, it answers 503 with Retry-After then: an empty 200
would tell a client the shopper has no recommendations, hiding the outage.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction
from django.http import QueryDict
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import (
    APIException,
    NotFound,
    ParseError,
    PermissionDenied,
    UnsupportedMediaType,
    ValidationError,
)
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from recommendations import catalog, metrics, serving, tracking, tunables
from recommendations.api.authentication import (
    BeaconSessionAuthentication,
    SameOriginBrowser,
    WriteKeyAuthentication,
    has_write_key,
)
from recommendations.api.schema import RETRY_AFTER, ApiSchema, BlockSchema  # also registers the app's extensions
from recommendations.api.serializers import (
    ApiErrorSerializer,
    BatchResultSerializer,
    EventBatchSerializer,
    RecommendationBlockSerializer,
)
from recommendations.api.throttling import IngestKeyThrottle, IngestThrottle, ReadKeyThrottle, ReadThrottle
from recommendations.api.validation import MAX_ID_LENGTH, Identity, as_error_list, validate_event
from recommendations.conf import DEFAULTS, rec_settings
from recommendations.models import ProductProfile
from recommendations.tracking import get_visitor_id, valid_visitor_id

logger = logging.getLogger(__name__)


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = gettext_lazy("Request body too large.")
    default_code = "payload_too_large"


# How long a client is asked to wait when the database cannot be reached: long enough not to pile retries onto a
# recovering server, short enough that blocks come back soon after it does.
UNAVAILABLE_RETRY_SECONDS = 30


class EventsUnavailable(APIException):
    """The database cannot be reached: a 503 with Retry-After (DRF sets it from `wait`), so the sender tries again."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = gettext_lazy("Events cannot be stored right now; please send the batch again later.")
    default_code = "unavailable"
    wait = UNAVAILABLE_RETRY_SECONDS


def refusal(exc_class: type[APIException], field: str, message: str) -> APIException:
    """An exception for a whole-batch problem that names the part of the request at fault."""
    exc = exc_class(message)
    exc.field = field  # type: ignore[attr-defined]
    return exc


def _too_large(size: int, max_bytes: int) -> str:
    return _("The body is %(size)s bytes; at most %(most)s are accepted.") % {"size": size, "most": max_bytes}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Whom a browser without consent validates its batch as: never stored, so never a shopper.
UNTRACKED_VISITOR = "0" * 32


def batch_result(
    accepted: int = 0,
    duplicates: int = 0,
    errors: list[dict[str, Any]] | None = None,
    unknown_products: list[str] | None = None,
    tracked: bool = True,
) -> dict[str, Any]:
    """The one answer shape of this endpoint, for successes and failures alike."""
    return {
        "accepted": accepted,
        "duplicates": duplicates,
        "errors": errors or [],
        "unknown_products": unknown_products or [],
        "tracked": tracked,
    }


def _refused(description: str, serializer: Any = BatchResultSerializer) -> OpenApiResponse:
    return OpenApiResponse(serializer, description=description)


class EventIngestView(APIView):
    """`POST {"events": [...]}`: store a batch of shopper events.

    Answers `{"accepted", "duplicates", "errors": [{"index", "field", "message"}], "unknown_products"}`:
    200 when at least one event was valid (a replay of already stored events included), 400 when none was or the
    body is not a batch, 413 over INGEST_MAX_BYTES or INGEST_MAX_EVENTS, 415 for a body that is not
    application/json, 403 for a wrong write key or a foreign Origin, 429 with Retry-After when throttled.
    See `recommendations.api.authentication` for why browsers need no CSRF token here.
    """

    authentication_classes = [WriteKeyAuthentication, BeaconSessionAuthentication]
    permission_classes = [AllowAny, SameOriginBrowser]  # AllowAny: anonymous shoppers too, as the schema says
    throttle_classes = [IngestThrottle, IngestKeyThrottle]
    renderer_classes = [JSONRenderer]
    parser_classes: list[Any] = []  # the body is read and limited by `read_batch`, never by DRF's parsers
    schema = ApiSchema()

    @extend_schema(
        operation_id="events_create",
        summary="Store a batch of shopper events",
        description=(
            "A browser writes events for its own shopper (session user or visitor cookie) and must not name "
            "`user_id` / `visitor_id` of anyone else; a server sends the write key header and names `user_id` or "
            "`visitor_id` in every event. Valid events are stored even when others in the batch are not; each "
            "problem is listed in `errors` with the event's index and the field at fault. A browser whose shopper "
            "has not agreed to be tracked gets a 200 with `tracked: false` once the body is a batch, and nothing "
            "of it is kept."
        ),
        request={"application/json": EventBatchSerializer},
        parameters=[RETRY_AFTER],
        responses={
            200: OpenApiResponse(BatchResultSerializer, description="At least one event was valid (or a replay)."),
            400: _refused(
                "The body is not JSON, not a batch, or its events list is empty, or no event in it was valid."
            ),
            403: _refused("A wrong write key, or a browser request from another origin."),
            413: _refused("Over INGEST_MAX_BYTES or INGEST_MAX_EVENTS."),
            415: _refused("The body is not application/json."),
            429: _refused("Throttled; the Retry-After header says when to try again."),
            503: _refused("The database cannot be reached; the Retry-After header says when to send again."),
        },
        tags=["events"],
    )
    def post(self, request: Request) -> Response:
        raw_events = self.read_batch(request)
        identity = self.identity(request)
        tracked = identity.trusted or tracking.may_track(request._request)
        if not tracked:
            # The shopper has not agreed to be tracked (tracking.consent): the batch is checked as anyone's is, so a
            # bad one is refused the same way, and then nothing of it is kept.
            identity = Identity(trusted=False, visitor_id=UNTRACKED_VISITOR)
        now = timezone.now()
        valid = []
        errors: list[dict[str, Any]] = []
        for index, raw in enumerate(raw_events):
            event, problems = validate_event(raw, index, identity, now)
            if event is None:
                errors.extend(problems)
            else:
                valid.append(event)
        if not valid:
            return Response(batch_result(errors=errors, tracked=tracked), status=status.HTTP_400_BAD_REQUEST)
        if not tracked:
            return Response(batch_result(errors=errors, tracked=False))

        product_ids = list(dict.fromkeys(e.product_id for e in valid if e.product_id))
        known = catalog.known_product_ids(product_ids)
        tracking.attribute(valid)
        # All of the batch or none of it (a batch over one INSERT's chunk is several statements), so a 503 for a
        # database lost midway means "send it all again", and the event ids make that retry exact.
        with transaction.atomic():
            stored = tracking.insert_events(valid)
        if stored:
            self.after_stored(stored)
        return Response(
            batch_result(
                accepted=len(stored),
                duplicates=len(valid) - len(stored),
                errors=errors,
                unknown_products=[pid for pid in product_ids if pid not in known],
            )
        )

    def after_stored(self, stored: list[Any]) -> None:
        """Tell the app the events are in (refresh scheduling, cache invalidation, receivers of `events_stored`).

        Once the events are stored the answer is 200 whatever happens here: a 5xx would make the sender send the
        batch again, and a failed refresh only costs freshness (the next precompute covers it)."""
        try:
            tracking.on_events_stored(stored)
        except Exception:
            logger.exception("event ingest: %d events stored, but what follows their storing failed", len(stored))

    def read_batch(self, request: Request) -> list[Any]:
        """The list under "events", after the content type and both size limits are checked, in that order."""
        django_request = request._request
        if django_request.content_type != "application/json":
            raise UnsupportedMediaType(django_request.content_type or "(none)")
        max_bytes = rec_settings.INGEST_MAX_BYTES
        try:
            declared = int(django_request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise refusal(ParseError, "body", _("Content-Length is not a number.")) from None
        if declared > max_bytes:
            raise refusal(PayloadTooLarge, "body", _too_large(declared, max_bytes))
        body = django_request.body
        if len(body) > max_bytes:
            raise refusal(PayloadTooLarge, "body", _too_large(len(body), max_bytes))
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise refusal(ParseError, "body", _("The body is not valid JSON: %(error)s") % {"error": exc}) from None
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            raise refusal(ParseError, "events", _('The body must be a JSON object with an "events" list.'))
        events = data["events"]
        if not events:
            raise refusal(ParseError, "events", _('The "events" list is empty.'))
        max_events = rec_settings.INGEST_MAX_EVENTS
        if len(events) > max_events:
            raise refusal(
                PayloadTooLarge,
                "events",
                _("The batch has %(count)s events; at most %(most)s are accepted.")
                % {"count": len(events), "most": max_events},
            )
        return events

    def identity(self, request: Request) -> Identity:
        if has_write_key(request):
            return Identity(trusted=True)
        user = request.user
        user_id = str(user.pk) if user is not None and user.is_authenticated else ""
        return Identity(trusted=False, user_id=user_id, visitor_id=get_visitor_id(request._request))

    def handle_exception(self, exc: Exception) -> Response:
        """Give refusals (400, 403, 413, 415, 429, 503) the same shape as a batch answer, keeping DRF's `detail`.

        A database that cannot be reached is a 503 with Retry-After, so a sender keeps its batch and tries again.
        """
        if isinstance(exc, OperationalError | InterfaceError):
            logger.warning("event ingest: the database cannot be reached: %s", exc)
            exc = EventsUnavailable()
        response = super().handle_exception(exc)
        detail = response.data.get("detail") if isinstance(response.data, dict) else None
        if detail is not None:
            response.data = {
                **batch_result(errors=[{"index": None, "field": getattr(exc, "field", None), "message": str(detail)}]),
                "detail": detail,
            }
        return response

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        """Count every answer, refusals included, from the one batch shape they all have (metrics)."""
        metrics.ingest_answered(response.status_code, getattr(response, "data", None))
        return super().finalize_response(request, response, *args, **kwargs)


# -- GET /api/recommendations/<placement>/ ---------------------------------------------------------------------------

MAX_LIMIT = 50
MAX_CATEGORY_LENGTH = 255  # ProductProfile.category
# Control characters never belong in an id or a slug, and PostgreSQL cannot even compare a string holding NUL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The same rule for the schema: an id without control characters or white space around it (an empty parameter is
# "not given", which the schema says with allowEmptyValue).
_ID_PATTERN = r"^[^\s\u0000-\u001f\u007f]([^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f])?$"


class RecommendationsUnavailable(APIException):
    """The database cannot be reached: a 503 with Retry-After (DRF sets the header from `wait`)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = gettext_lazy("Recommendations are temporarily unavailable; please try again shortly.")
    default_code = "unavailable"
    wait = UNAVAILABLE_RETRY_SECONDS


def database_reachable() -> bool:
    """Whether the default database answers now (connects if need be, then one SELECT 1 on PostgreSQL).

    Asked only when a block came back empty: serving never raises (a tag must render nothing rather than fail), so an
    empty block is the one sign, cheap to confirm, that it may have been the database rather than the shopper.
    """
    try:
        connection.ensure_connection()
        return connection.is_usable()
    except (OperationalError, InterfaceError):
        return False


class InvalidParameters(ValidationError):
    """Every bad query parameter of a request at once, each named."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']} {e['message']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class BlockQuery:
    product: str = ""
    category: str = ""
    limit: int | None = None
    shopper: str = ""


def _valid_shopper(value: str) -> bool:
    if value.startswith("u:"):
        user_id = value[2:]
        return 0 < len(user_id) <= MAX_ID_LENGTH and not _CONTROL.search(user_id) and user_id.strip() == user_id
    return value.startswith("v:") and valid_visitor_id(value[2:])


def _at_most_characters(most: int) -> str:
    return _("must be at most %(most)s characters") % {"most": most}


def read_query(params: QueryDict) -> BlockQuery:
    """The block's parameters, or InvalidParameters naming each one at fault; an empty value means "not given"."""
    errors: list[dict[str, str]] = []

    def problem(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    values: dict[str, str] = {}
    for name in ("product", "category", "limit", "shopper"):
        given = params.getlist(name)
        if len(given) > 1:
            problem(name, _("must be given at most once"))
        values[name] = given[-1] if given else ""

    product = values["product"]
    if len(product) > MAX_ID_LENGTH:
        problem("product", _at_most_characters(MAX_ID_LENGTH))
    elif _CONTROL.search(product) or product.strip() != product:
        problem("product", _("must be a product id: no control characters or surrounding spaces"))

    category = values["category"]
    if len(category) > MAX_CATEGORY_LENGTH:
        problem("category", _at_most_characters(MAX_CATEGORY_LENGTH))
    elif _CONTROL.search(category):
        problem("category", _("must not contain control characters"))

    limit: int | None = None
    if values["limit"]:
        # Digits only: int() would also take " 5", "+5" or "5_0", which the schema's integer does not say.
        limit = int(values["limit"]) if values["limit"].isascii() and values["limit"].isdigit() else None
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            limit = None
            problem("limit", _("must be a whole number from 1 to %(most)s") % {"most": MAX_LIMIT})

    shopper = values["shopper"]
    if shopper and not _valid_shopper(shopper):
        problem("shopper", _("must be u:<user id> or v:<32 hex digit visitor id>"))

    if errors:
        raise InvalidParameters(errors)
    return BlockQuery(product=product, category=category, limit=limit, shopper=shopper)


def block_answer(block: serving.Block) -> dict[str, Any]:
    """The JSON of a block: name, price, category and brand from the engine's profiles (one query), the URL from the
    host's product object, if it has one."""
    profiles = {
        row["product_id"]: row
        for row in ProductProfile.objects.filter(product_id__in=[i.product_id for i in block.items]).values(
            "product_id", "name", "category", "brand", "price"
        )
    }
    items = []
    for rank, item in enumerate(block.items, start=1):
        profile = profiles.get(item.product_id, {})
        get_url = getattr(item.product, "get_absolute_url", None)
        price = profile.get("price")
        items.append(
            {
                "product_id": item.product_id,
                "name": profile.get("name") or str(item.product),
                "url": get_url() if callable(get_url) else None,
                "price": None if price is None else str(price),
                "category": profile.get("category", ""),
                "brand": profile.get("brand", ""),
                "score": item.score,
                "reason": item.reason,
                "reason_text": item.reason_text,
                "rank": rank,
            }
        )
    return {
        "placement": block.placement,
        "title": serving.shown_title(block.title),
        "recommendation_id": block.recommendation_id,
        "source": block.source,
        "items": items,
    }


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ApiErrorSerializer, description=description)


class RecommendationsView(APIView):
    """`GET /api/recommendations/<placement>/`: one block for the requesting shopper, or for a named one.

    The shopper is the session user or the visitor cookie, as for the template tags. Asking for another shopper's
    block (`shopper=u:42`) takes the write key (a server rendering for its shoppers; the impression is recorded for
    that shopper) or a staff session (a preview: nothing is recorded, the shopper saw nothing).
    Refusals answer `{"errors": [{"field", "message"}], "detail"}`: 400 naming each bad parameter, 403, 404 for an
    unknown placement or product, 429 with Retry-After.
    """

    authentication_classes = [WriteKeyAuthentication, BeaconSessionAuthentication]  # a GET: no CSRF question
    permission_classes = [AllowAny]  # who may ask for whom is decided per request, in `get`
    throttle_classes = [ReadThrottle, ReadKeyThrottle]
    renderer_classes = [JSONRenderer]
    schema = BlockSchema()

    @extend_schema(
        operation_id="recommendations_retrieve",
        summary="A block of recommendations for one placement",
        description=(
            "The same block the template tags render: the placement's list for this shopper, filtered (inactive, "
            "out of stock, the page's product, the cart, what they bought), spread over categories and brands, "
            "topped up from the placement's fallback chain, each item with a reason. The impression is recorded "
            "after the response is sent; send clicks as events with this `placement` and `recommendation_id`."
        ),
        parameters=[
            OpenApiParameter(
                "placement",
                str,
                OpenApiParameter.PATH,
                enum=list(DEFAULTS["PLACEMENTS"]),  # the system check allows no others (each needs a source)
                description='A surface; its size, caps and fallback are set in RECOMMENDATIONS["PLACEMENTS"].',
            ),
            OpenApiParameter(
                "product",
                {"type": "string", "maxLength": MAX_ID_LENGTH, "pattern": _ID_PATTERN},
                description="The page's product id (similar, bought_together): no control characters or white "
                "space around it.",
            ),
            OpenApiParameter(
                "category",
                {"type": "string", "maxLength": MAX_CATEGORY_LENGTH, "pattern": r"^[^\u0000-\u001f\u007f]*$"},
                description="Scopes trending; an unknown category is not an error.",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                description="Items wanted; the placement's size when absent.",
            ),
            OpenApiParameter(
                "shopper",
                {"type": "string", "pattern": f"^(u:{_ID_PATTERN[1:-1]}|v:[0-9a-f]{{32}})$", "maxLength": 66},
                description="Another shopper's block (u:<user id> or v:<visitor id>): needs the write key or a staff "
                "session.",
            ),
            RETRY_AFTER,
        ],
        responses={
            200: OpenApiResponse(RecommendationBlockSerializer, description="The block; items may be empty."),
            400: _error("A parameter is invalid; each one at fault is named in errors[].field."),
            403: _error("shopper names someone else without the write key or a staff session, or a wrong key."),
            404: _error("Unknown placement or product."),
            429: _error("Throttled; the Retry-After header says when to try again."),
            503: _error("The database cannot be reached; the Retry-After header says when to try again."),
        },
        tags=["recommendations"],
    )
    def get(self, request: Request, placement: str) -> Response:
        if placement not in serving.placement_names():
            known = ", ".join(serving.placement_names())
            raise refusal(
                NotFound,
                "placement",
                _("Unknown placement %(name)r; the placements are: %(known)s.") % {"name": placement, "known": known},
            )
        query = read_query(request.query_params)
        django_request = request._request
        own = tracking.get_shopper(django_request)
        shopper = query.shopper or own
        on_behalf = shopper != own
        if on_behalf and not (has_write_key(request) or (request.user and request.user.is_staff)):
            raise refusal(
                PermissionDenied,
                "shopper",
                _("Only a server with the write key or a staff user may ask for another shopper's recommendations."),
            )
        if query.product and not ProductProfile.objects.filter(product_id=query.product).exists():
            raise refusal(NotFound, "product", _("Unknown product %(id)r.") % {"id": query.product})

        block = serving.recommend(
            placement,
            shopper=shopper,
            product_id=query.product,
            category=query.category,
            limit=query.limit,
            campaign=tunables.campaign_of(django_request),
        )
        if not block.items and not database_reachable():
            raise RecommendationsUnavailable()
        block = serving.attach_products(block)
        if not on_behalf:
            tracking.queue_impression(django_request, block)
        elif has_write_key(request):
            tracking.queue_impression(django_request, block, shopper=shopper)
        return Response({**block_answer(block), "personalised": bool(shopper)})

    def handle_exception(self, exc: Exception) -> Response:
        """Every refusal as `{"errors": [{"field", "message"}], "detail"}`, like the ingest API's; a database that
        cannot be reached anywhere in the request (the session, the product check) is a 503, not a 500."""
        if isinstance(exc, OperationalError | InterfaceError):
            logger.warning("recommendations API: the database cannot be reached: %s", exc)
            exc = RecommendationsUnavailable()
        response = super().handle_exception(exc)
        if isinstance(exc, InvalidParameters):
            response.data = {"errors": exc.errors, "detail": str(exc.detail[0])}
            return response
        return as_error_list(response, exc)
