"""The API's request and answer shapes, declared once for the OpenAPI schema.

The views build their answers as plain dicts and validate by hand (see `validation.py` for why: a declarative
serializer costs about 20x as much per object), so these classes are documentation, not code the request runs
through. A test compares real answers with them, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from recommendations.api.validation import (
    DECIMAL_STRING,
    MAX_CONTEXT_BYTES,
    MAX_ID_LENGTH,
    MAX_PLACEMENT_LENGTH,
    MAX_QUANTITY,
    MAX_QUERY_LENGTH,
    MAX_VALUE,
    NEEDS_PLACEMENT,
    NEEDS_PRODUCT,
)
from recommendations.conf import EVENT_TYPES, rec_settings


class SchemaField(serializers.Field):
    """A field that is only documentation: its OpenAPI schema is given as is (`api.schema.SchemaFieldExtension`).

    Used where a DRF field cannot say what the server accepts: a string or an integer, null read as "not given", a
    pattern that keeps NUL out.
    """

    def __init__(self, schema: dict[str, Any], **kwargs: Any) -> None:
        self.json_schema = schema
        super().__init__(**kwargs)


# Each schema below states what `validation.validate_event` accepts, so a generated client (and Schemathesis,
# tests/api/test_schemathesis.py) learns the server's rules. What no schema can say is in the descriptions: the
# EVENT_MAX_AGE_DAYS window of timestamps, the bytes of context, and who may name user_id / visitor_id.
_TEXT = r"^[^\u0000]*$"  # PostgreSQL cannot store NUL (nor a lone surrogate, which is no Unicode text at all)
_NOT_BLANK = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"  # and at least one character that is not white space


def text(most: int, *, least: int = 0, not_blank: bool = False) -> dict[str, Any]:
    """A string of at most `most` characters without NUL."""
    schema: dict[str, Any] = {"type": "string", "maxLength": most, "pattern": _NOT_BLANK if not_blank else _TEXT}
    if least:
        schema["minLength"] = least
    return schema


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: the server reads null as "not given"."""
    return {**schema, "nullable": True}


# Hosts often send numeric ids as JSON numbers; an integer id is read as its digits (at most 64 of them).
_INTEGER_ID = {"type": "integer"}
EVENT_TYPE = {"type": "string", "enum": list(EVENT_TYPES)}
# ISO-8601, or Unix seconds as a number or a digit string (`validation._UNIX_STRING`); 253402300799 is
# 9999-12-31T23:59:59Z, the last second Python can read.
TIMESTAMP = {
    "oneOf": [
        {"type": "string", "format": "date-time", "maxLength": 64},
        {"type": "string", "pattern": r"^\s*\d{1,12}(\.\d{1,9})?\s*$"},
        {"type": "number", "minimum": 0, "maximum": 253402300799},
    ]
}
VALUE = {
    "oneOf": [
        {"type": "number", "minimum": 0, "maximum": float(MAX_VALUE)},
        {"type": "string", "pattern": f"^{DECIMAL_STRING.pattern}$"},
    ]
}


class _EventSerializer(serializers.Serializer):
    """What every event may carry; the subclasses make a type's own fields required."""

    event_type = SchemaField(EVENT_TYPE)
    product_id = SchemaField(
        optional({"oneOf": [text(MAX_ID_LENGTH), _INTEGER_ID]}),
        required=False,
        help_text="The product (at most 64 characters).",
    )
    event_id = SchemaField(
        optional(text(MAX_ID_LENGTH, least=1)),
        required=False,
        help_text="Makes a replay harmless; generated when absent.",
    )
    timestamp = SchemaField(
        optional(TIMESTAMP),
        required=False,
        help_text="ISO-8601 (naive means UTC) or Unix seconds; the receive time when absent. At most "
        "EVENT_MAX_AGE_DAYS (3650) days old, else an error for this event; more than five minutes ahead of the "
        "server's clock means the event is stored at its receive time.",
    )
    quantity = SchemaField(optional({"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}), default=1)
    value = SchemaField(
        optional(VALUE),
        required=False,
        help_text="A non-negative decimal, e.g. the line total: a JSON number or a string of digits.",
    )
    query = SchemaField(optional(text(MAX_QUERY_LENGTH)), required=False, help_text="The search terms.")
    placement = SchemaField(
        optional(text(MAX_PLACEMENT_LENGTH)), required=False, help_text="The block's placement (impression, click)."
    )
    recommendation_id = SchemaField(
        optional(text(MAX_ID_LENGTH)),
        required=False,
        help_text="The recommendation_id of the block shown (impression, click).",
    )
    context = SchemaField(
        optional({"type": "object", "additionalProperties": True}),
        required=False,
        help_text=f"Free-form, at most {MAX_CONTEXT_BYTES} bytes of JSON; no key or string in it may hold NUL.",
    )
    user_id = SchemaField(
        optional({"oneOf": [text(MAX_ID_LENGTH), _INTEGER_ID]}),
        required=False,
        help_text="With the write key, every event names its shopper: user_id or visitor_id (an empty one counts as "
        "absent). A browser leaves both out (its session or visitor cookie says who it is) or names its own.",
    )
    visitor_id = SchemaField(
        optional({"oneOf": [text(MAX_ID_LENGTH), _INTEGER_ID]}),
        required=False,
        help_text="See user_id.",
    )


class ProductEventSerializer(_EventSerializer):
    """view, add_to_cart, remove_from_cart, purchase, favorite: a product is required."""

    event_type = SchemaField({"type": "string", "enum": sorted(NEEDS_PRODUCT - NEEDS_PLACEMENT)})
    product_id = SchemaField(
        {"oneOf": [text(MAX_ID_LENGTH, not_blank=True), _INTEGER_ID]}, help_text="The product (at most 64 characters)."
    )


class BlockEventSerializer(_EventSerializer):
    """impression, click: the product and the block it was shown in."""

    event_type = SchemaField({"type": "string", "enum": sorted(NEEDS_PLACEMENT)})
    product_id = SchemaField(
        {"oneOf": [text(MAX_ID_LENGTH, not_blank=True), _INTEGER_ID]}, help_text="The product (at most 64 characters)."
    )
    placement = SchemaField(text(MAX_PLACEMENT_LENGTH, least=1), help_text="The block's placement.")
    recommendation_id = SchemaField(text(MAX_ID_LENGTH, least=1), help_text="The recommendation_id of the block shown.")


class SearchEventSerializer(_EventSerializer):
    """search: the terms are required, a product is not."""

    event_type = SchemaField({"type": "string", "enum": ["search"]})
    query = SchemaField(text(MAX_QUERY_LENGTH, not_blank=True), help_text="The search terms.")


InboundEventSerializer = PolymorphicProxySerializer(
    component_name="InboundEvent",
    serializers={
        **dict.fromkeys(sorted(NEEDS_PRODUCT - NEEDS_PLACEMENT), ProductEventSerializer),
        **dict.fromkeys(sorted(NEEDS_PLACEMENT), BlockEventSerializer),
        "search": SearchEventSerializer,
    },
    resource_type_field_name="event_type",
)


class EventBatchSerializer(serializers.Serializer):
    events = serializers.ListField(
        child=InboundEventSerializer,
        min_length=1,
        max_length=rec_settings.INGEST_MAX_EVENTS,
        help_text="INGEST_MAX_EVENTS at most (413 above). Each event is checked on its own: the valid ones are "
        "stored even when others are refused (200, each refusal in errors[]); 400 when none is valid.",
    )


class EventErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(allow_null=True, help_text="The event's position; null for the whole batch.")
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class BatchResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    errors = EventErrorSerializer(many=True)
    unknown_products = serializers.ListField(child=serializers.CharField())
    tracked = serializers.BooleanField(
        help_text="False when a browser's shopper has not agreed to be tracked: nothing of the batch was kept."
    )
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
    personalised = serializers.BooleanField(
        help_text="Whether the block was built for a known shopper; false for a shopper who has not agreed to be "
        "tracked (or is unknown): shared lists only."
    )


class ParameterErrorSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="The query or path parameter at fault.")
    message = serializers.CharField()


class ApiErrorSerializer(serializers.Serializer):
    errors = ParameterErrorSerializer(many=True)
    detail = serializers.CharField()


# -- POST /api/privacy/erase/ and /api/privacy/export/ ---------------------------------------------------------------

# An id as `privacy.subjects.clean_ids` reads it: 1 to 64 printable characters once the white space around it is
# trimmed, or a JSON integer.
PRIVACY_ID = {
    "oneOf": [
        {
            "type": "string",
            "pattern": r"^\s*[^\s\u0000-\u001f\u007f]([^\u0000-\u001f\u007f]{0,62}[^\s\u0000-\u001f\u007f])?\s*$",
        },
        _INTEGER_ID,
    ]
}


class PrivacyRequestSerializer(serializers.Serializer):
    """At least one id in one of the lists (`api.schema.PrivacyRequestScheme` says so); no other field."""

    user_ids = serializers.ListField(
        child=SchemaField(PRIVACY_ID),
        required=False,
        allow_null=True,
        help_text="User ids; a null or empty list names no one. Duplicates count once.",
    )
    visitor_ids = serializers.ListField(
        child=SchemaField(PRIVACY_ID),
        required=False,
        allow_null=True,
        help_text="Visitor ids (the rec_vid cookie); see user_ids.",
    )


class ErasureResultSerializer(serializers.Serializer):
    erasure = serializers.IntegerField(help_text="The audit row (Erasure request) of this erasure.")
    counts = serializers.DictField(
        help_text="What went: events (and events_by_type), attribution_unlinked, stored_lists, cache_keys (null "
        "when the cache cannot be searched), linked_visitors, shopper_keys."
    )


class ExportDocumentSerializer(serializers.Serializer):
    format = serializers.CharField()
    version = serializers.IntegerField()
    exported_at = serializers.DateTimeField()
    subjects = serializers.DictField(help_text="user_ids, visitor_ids, linked_visitor_ids, shoppers.")
    counts = serializers.DictField(child=serializers.IntegerField())
    events = serializers.ListField(child=serializers.DictField(), help_text="Every event, oldest first.")
    stored_lists = serializers.ListField(child=serializers.DictField(), help_text="Every stored list of theirs.")
