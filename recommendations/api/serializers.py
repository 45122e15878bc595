"""The API's request and answer shapes, declared once for the OpenAPI schema.

The views build their answers as plain dicts and validate by hand (see `validation.py` for why: a declarative
serializer costs about 20x as much per object), so these classes are documentation, not code the request runs
through. A test compares real answers with them, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from recommendations.conf import EVENT_TYPES


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}]})
class StringOrIntegerField(serializers.CharField):
    """Ids: hosts often send numeric ids as numbers."""


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "number"}]})
class StringOrNumberField(serializers.CharField):
    """Decimals and timestamps: a digit string or a JSON number."""


# -- POST /api/events/ -----------------------------------------------------------------------------------------------


class InboundEventSerializer(serializers.Serializer):
    event_type = serializers.ChoiceField(choices=list(EVENT_TYPES))
    product_id = StringOrIntegerField(
        required=False, max_length=64, help_text="Required for every type but search (at most 64 characters)."
    )
    event_id = serializers.CharField(
        required=False, max_length=64, help_text="Makes a replay harmless; generated when absent."
    )
    timestamp = StringOrNumberField(
        required=False,
        help_text="ISO-8601 (naive means UTC) or Unix seconds; the receive time when absent. At most "
        "EVENT_MAX_AGE_DAYS (3650) days old, else an error for this event; more than five minutes ahead of the "
        "server's clock means the event is stored at its receive time.",
    )
    quantity = serializers.IntegerField(required=False, min_value=1, default=1)
    value = StringOrNumberField(required=False, help_text="A non-negative decimal, e.g. the line total.")
    query = serializers.CharField(required=False, max_length=10_000, help_text="Required for search events.")
    placement = serializers.CharField(
        required=False, max_length=40, help_text="Required for impression and click events."
    )
    recommendation_id = serializers.CharField(
        required=False,
        max_length=64,
        help_text="The recommendation_id of the block shown; required for impression and click events.",
    )
    context = serializers.DictField(required=False, help_text="Free-form, at most 2048 bytes of JSON.")
    user_id = StringOrIntegerField(
        required=False, max_length=64, help_text="With the write key: whose event (user_id or visitor_id)."
    )
    visitor_id = serializers.CharField(required=False, max_length=64, help_text="With the write key: see user_id.")


class EventBatchSerializer(serializers.Serializer):
    events = InboundEventSerializer(many=True, help_text="At most INGEST_MAX_EVENTS (500) events.")


class EventErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(allow_null=True, help_text="The event's position; null for the whole batch.")
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class BatchResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    errors = EventErrorSerializer(many=True)
    unknown_products = serializers.ListField(child=serializers.CharField())
    detail = serializers.CharField(required=False, help_text="Present when the whole request was refused.")


# -- GET /api/recommendations/<placement>/ ---------------------------------------------------------------------------


class RecommendedProductSerializer(serializers.Serializer):
    product_id = serializers.CharField()
    name = serializers.CharField()
    url = serializers.CharField(allow_null=True, help_text="The product page, if the product model has one.")
    price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True, coerce_to_string=True)
    category = serializers.CharField()
    brand = serializers.CharField()
    score = serializers.FloatField()
    reason = serializers.CharField(
        help_text="A code: because:<id>, session:<id>, similar:<id>, together:<id>, trending, trending:<category>, "
        "popular, also, viewed, repeat."
    )
    reason_text = serializers.CharField(help_text="The sentence to show the shopper, e.g. 'Because you looked at X'.")
    rank = serializers.IntegerField(min_value=1)


class RecommendationBlockSerializer(serializers.Serializer):
    placement = serializers.CharField()
    title = serializers.CharField()
    recommendation_id = serializers.CharField(
        help_text="Send it with click events (and placement) so what follows is attributed to this block."
    )
    source = serializers.ChoiceField(
        choices=["stored", "fallback"], help_text="stored: the placement's own list led; fallback: it was empty."
    )
    items = RecommendedProductSerializer(many=True)


class ParameterErrorSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="The query or path parameter at fault.")
    message = serializers.CharField()


class ApiErrorSerializer(serializers.Serializer):
    errors = ParameterErrorSerializer(many=True)
    detail = serializers.CharField()
