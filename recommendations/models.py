"""What the app stores: behaviour events, its own view of the catalog, precomputed lists and runs."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from recommendations.conf import EVENT_TYPES


class EventType(models.TextChoices):
    VIEW = "view", "View"
    ADD_TO_CART = "add_to_cart", "Add to cart"
    REMOVE_FROM_CART = "remove_from_cart", "Remove from cart"
    PURCHASE = "purchase", "Purchase"
    FAVORITE = "favorite", "Favourite"
    SEARCH = "search", "Search"
    IMPRESSION = "impression", "Recommendation impression"
    CLICK = "click", "Recommendation click"


assert tuple(EventType.values) == EVENT_TYPES


def shopper_key(user_id: str | None, visitor_id: str | None) -> str:
    """One id per shopper for the engine: the user when known, else the anonymous visitor."""
    if user_id:
        return f"u:{user_id}"
    if visitor_id:
        return f"v:{visitor_id}"
    return ""


class Event(models.Model):
    """One thing a shopper did. Append-only; `event_id` makes replays harmless."""

    event_id = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=20, choices=EventType.choices)
    # The shopper: opaque host user id when logged in, the visitor cookie otherwise (both kept after login).
    user_id = models.CharField(max_length=64, blank=True, default="")
    visitor_id = models.CharField(max_length=64, blank=True, default="")
    shopper = models.CharField(max_length=70, help_text="u:<user_id> or v:<visitor_id>; what the engine groups by")
    product_id = models.CharField(max_length=64, blank=True, default="")
    quantity = models.IntegerField(default=1)
    value = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    query = models.CharField(max_length=255, blank=True, default="")
    # When it happened: the client's clock when sane (and always for imported history), else receive time.
    occurred_at = models.DateTimeField(default=timezone.now)
    client_time = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    placement = models.CharField(max_length=40, blank=True, default="")
    recommendation_id = models.CharField(max_length=64, blank=True, default="")
    context = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["shopper", "-occurred_at"], name="rec_event_shopper_time"),
            models.Index(fields=["occurred_at"], name="rec_event_time"),
            models.Index(fields=["product_id", "event_type"], name="rec_event_product_type"),
            models.Index(fields=["visitor_id"], name="rec_event_visitor"),
            models.Index(fields=["user_id"], name="rec_event_user"),
            models.Index(fields=["recommendation_id"], name="rec_event_rec_id"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.product_id or self.query} by {self.shopper}"


class ProductProfile(models.Model):
    """The engine's copy of a product, kept in step with the host's model through the PRODUCT_FIELDS map."""

    product_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255, blank=True, default="")
    category = models.CharField(max_length=255, blank=True, default="", db_index=True)
    brand = models.CharField(max_length=255, blank=True, default="")
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    in_stock = models.BooleanField(default=True)
    active = models.BooleanField(default=True)
    text = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(null=True, blank=True)
    sales_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name or self.product_id


class RecommendationSet(models.Model):
    """One precompute's output. Readers use the active set only, so a set is built whole, then switched on."""

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BUILDING, db_index=True)
    algorithm = models.CharField(max_length=60, default="cooccurrence")
    stats = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"Set #{self.pk} ({self.status})"


class StoredList(models.Model):
    """One ranked list: a shopper's for_you, a product's similar, or the shop-wide trending list.

    The items sit in one JSON array ([[product_id, score, reason], ...]) so serving a block is one indexed read.
    """

    recommendation_set = models.ForeignKey(RecommendationSet, on_delete=models.CASCADE, related_name="lists")
    placement = models.CharField(max_length=40)
    # Shopper key for per-shopper lists, product id for per-product lists, "" (or a category) for shared ones.
    subject = models.CharField(max_length=70, blank=True, default="")
    items = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["recommendation_set", "placement", "subject"], name="rec_storedlist_unique")
        ]

    def __str__(self) -> str:
        return f"{self.placement}:{self.subject or '*'}"


class PrecomputeRun(models.Model):
    """A precompute as staff see it in the admin: state, progress and what it produced."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0, help_text="0 to 1")
    stage = models.CharField(max_length=60, blank=True, default="")
    task_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    recommendation_set = models.ForeignKey(
        RecommendationSet, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    stats = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Precompute #{self.pk} {self.status}"


class TrainingRun(models.Model):
    """One retrain: its progress, every candidate's metrics, the model it chose and whether that model serves.

    The registry of models is this table: a run that passed the gate and wrote a hash-checked artefact can serve;
    at most one run serves at a time (`is_serving`), and staff can switch back to any earlier run with an artefact.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded: new model serving"
        KEPT_OLD = "kept_old", "Succeeded: old model kept"
        SKIPPED = "skipped", "Skipped: another retrain was running"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    progress = models.FloatField(default=0.0, help_text="0 to 1")
    stage = models.CharField(max_length=60, blank=True, default="")
    task_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stage_seconds = models.JSONField(default=dict, blank=True)
    data_stats = models.JSONField(default=dict, blank=True)
    # {candidate: {"validation": {...metrics}, "test": {...}, "fit": {...stats}, "seconds": s}}
    candidates = models.JSONField(default=dict, blank=True)
    chosen = models.CharField(max_length=120, blank=True, default="", help_text="The recipe this run picked")
    validation_ndcg = models.FloatField(null=True, blank=True)
    test_metrics = models.JSONField(default=dict, blank=True)
    gate = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True, default="", help_text="What happened, in a sentence")
    error = models.TextField(blank=True, default="")
    artefact_path = models.CharField(max_length=500, blank=True, default="")
    artefact_sha256 = models.CharField(max_length=64, blank=True, default="")
    data_until = models.DateTimeField(null=True, blank=True, help_text="Newest event the model learned from")
    is_serving = models.BooleanField(default=False, db_index=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_serving"], condition=models.Q(is_serving=True), name="rec_trainingrun_one_serving"
            )
        ]

    def __str__(self) -> str:
        return f"Training run #{self.pk} {self.status}"

    @property
    def has_artefact(self) -> bool:
        return bool(self.artefact_path and self.artefact_sha256)
