"""What the app stores: behaviour events, its own view of the catalog, precomputed lists and runs."""

from __future__ import annotations

from typing import Any

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
    # The experiment arm that served the block ("<experiment id>:<variant name>"), stamped on its impression, and
    # copied onto the click and any attributed conversion.
    variant = models.CharField(max_length=80, blank=True, default="", db_default="")
    context = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["shopper", "-occurred_at"], name="rec_event_shopper_time"),
            models.Index(fields=["occurred_at"], name="rec_event_time"),
            models.Index(fields=["product_id", "event_type"], name="rec_event_product_type"),
            models.Index(fields=["visitor_id"], name="rec_event_visitor"),
            models.Index(fields=["user_id"], name="rec_event_user"),
            models.Index(fields=["recommendation_id"], name="rec_event_rec_id"),
            # The experiment report reads one experiment's stamped events since its start. Most events carry no
            # stamp, so the index leaves them out and stays as small as the experiments' own traffic.
            models.Index(
                fields=["variant", "occurred_at"], condition=~models.Q(variant=""), name="rec_event_variant_time"
            ),
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


# -- what staff tune in the admin (issue 5) ------------------------------------------------------------------------


class Placement(models.Model):
    """A surface as staff tune it. A row overrides RECOMMENDATIONS["PLACEMENTS"] for its name; serving reads the rows
    through a cache that every save and delete flushes, so a change shows on the next page."""

    class Strategy(models.TextChoices):
        MODEL = "model", "The serving model's lists"
        TRENDING = "trending", "Trending only"
        POPULAR = "popular", "Best sellers only"
        NEWEST = "newest", "Newest arrivals only"

    name = models.CharField(max_length=40, unique=True, help_text="for_you, similar, bought_together, trending, ...")
    title = models.CharField(max_length=120, blank=True, default="", help_text="Shown to shoppers above the block")
    enabled = models.BooleanField(default=True, help_text="Off: the block renders nothing")
    size = models.PositiveSmallIntegerField(default=8, help_text="Items per block, 1 to 50")
    allow_bought = models.BooleanField(default=False, help_text="May show products the shopper already bought")
    max_per_category = models.PositiveSmallIntegerField(default=0, help_text="Diversity cap; 0 = none")
    max_per_brand = models.PositiveSmallIntegerField(default=0, help_text="Diversity cap; 0 = none")
    fallback = models.JSONField(
        default=list, blank=True, help_text="What fills a short block, in order: rules, similar, trending_category, ..."
    )
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.MODEL)
    exploration_share = models.FloatField(
        default=0.0,
        help_text="Share of slots (0 to 0.5) given to new products with no events yet, so they gather feedback",
    )
    exploration_max_age_days = models.PositiveSmallIntegerField(
        default=14, help_text="How young a product counts as new"
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RuleWindowQuerySet(models.QuerySet):
    def live(self, now: Any = None) -> models.QuerySet:
        """Active rules whose window contains `now`."""
        now = now or timezone.now()
        return self.filter(active=True).filter(
            models.Q(starts_at__isnull=True) | models.Q(starts_at__lte=now),
            models.Q(ends_at__isnull=True) | models.Q(ends_at__gt=now),
        )


class AbstractRule(models.Model):
    """What cold-start and merchandising rules share: a name staff know them by, an on/off switch, the placements
    they apply to, a price band, a time window (`objects.live()` reads it) and who changed them when.

    `priority` stays on each rule because it means different things there (which rule wins, which applies last).
    The fields keep their exact definitions, so the tables (migration 0005) do not change.
    """

    name = models.CharField(max_length=120)
    active = models.BooleanField(default=True)
    placements = models.JSONField(default=list, blank=True, help_text="Placement names; empty = every placement")
    price_min = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    price_max = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True, default="")

    objects = RuleWindowQuerySet.as_manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name


class ColdStartRule(AbstractRule):
    """Who (an audience) sees what (a source of products) where (placements) and when, for shoppers the model
    cannot serve yet. The highest priority live rule that matches a shopper and a placement fills the block first."""

    class Audience(models.TextChoices):
        EVERYONE = "everyone", "Everyone"
        ANONYMOUS = "anonymous", "Anonymous visitors"
        NEW_ACCOUNT = "new_account", "Accounts younger than N days"
        FEW_EVENTS = "few_events", "Shoppers with fewer than N events"
        NO_PURCHASES = "no_purchases", "Shoppers with no purchases yet"
        CATEGORY = "category", "Arriving in a category"
        CAMPAIGN = "campaign", "Arriving from a campaign (utm_campaign)"

    class Source(models.TextChoices):
        TRENDING = "trending", "Trending overall"
        TRENDING_CATEGORY = "trending_category", "Trending in the context category (or the category given)"
        TOP_SELLERS = "top_sellers", "Top sellers over the last N days"
        NEWEST = "newest", "Newest arrivals"
        HAND_PICKED = "hand_picked", "Hand-picked products, in order"
        BRAND = "brand", "A brand's best sellers"
        PRICE_BAND = "price_band", "Best sellers in a price band"

    priority = models.IntegerField(default=0, help_text="Higher wins when several rules match")
    audience = models.CharField(max_length=20, choices=Audience.choices, default=Audience.EVERYONE)
    audience_number = models.PositiveIntegerField(null=True, blank=True, help_text="N for 'fewer than N' / 'N days'")
    audience_value = models.CharField(
        max_length=255, blank=True, default="", help_text="The category slug or campaign name the audience arrives with"
    )
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.TRENDING)
    source_value = models.CharField(
        max_length=255, blank=True, default="", help_text="The category for trending in a category, or the brand"
    )
    source_days = models.PositiveIntegerField(null=True, blank=True, help_text="Window for top sellers / newest")
    products = models.JSONField(default=list, blank=True, help_text="Hand-picked product ids, in order")

    class Meta:
        ordering = ["-priority", "pk"]


class MerchandisingRule(AbstractRule):
    """Boost, bury, pin or exclude products after the model has ranked them, before the fallback fills the block."""

    class Action(models.TextChoices):
        BOOST = "boost", "Boost (move up)"
        BURY = "bury", "Bury (move down)"
        PIN = "pin", "Pin to a position"
        EXCLUDE = "exclude", "Exclude"

    class Target(models.TextChoices):
        PRODUCT = "product", "A product"
        CATEGORY = "category", "A category"
        BRAND = "brand", "A brand"
        PRICE_BAND = "price_band", "A price band"

    priority = models.IntegerField(default=0, help_text="Higher is applied later, so it has the last word")
    action = models.CharField(max_length=10, choices=Action.choices)
    target = models.CharField(max_length=12, choices=Target.choices)
    target_value = models.CharField(
        max_length=255, blank=True, default="", help_text="The product id, category slug or brand name"
    )
    position = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1-based slot for a pin")
    strength = models.FloatField(default=2.0, help_text="How far a boost or bury moves: score x or / this")

    class Meta:
        ordering = ["priority", "pk"]


class Experiment(models.Model):
    """An A/B/n test on one placement: shoppers are bucketed by a hash of their id and the experiment's salt."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"

    name = models.CharField(max_length=120)
    placement = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    salt = models.CharField(max_length=32, blank=True, default="", help_text="Bucketing salt; fixed at start")
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    winner = models.ForeignKey(
        "ExperimentVariant", on_delete=models.SET_NULL, null=True, blank=True, related_name="won"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # Serving splits a placement's traffic between one experiment's arms; `experiments.operations.start`
            # checks this under row locks and says why, and the database holds it against anything that slips past
            # the check.
            models.UniqueConstraint(
                fields=["placement"],
                condition=models.Q(status="running"),
                name="rec_experiment_one_running_per_placement",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.placement})"


class ExperimentVariant(models.Model):
    """One arm: a strategy (or a trained model version) and its share of the traffic."""

    class Strategy(models.TextChoices):
        MODEL = "model", "The serving model (as without the experiment)"
        MODEL_VERSION = "model_version", "A given trained model version"
        TRENDING = "trending", "Trending only"
        POPULAR = "popular", "Best sellers only"
        NEWEST = "newest", "Newest arrivals only"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=40, help_text="Short, stamped on every impression and click: A, B, control...")
    share = models.FloatField(default=0.5, help_text="Share of the traffic; shares are normalised over the variants")
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.MODEL)
    training_run = models.ForeignKey(
        TrainingRun, on_delete=models.SET_NULL, null=True, blank=True, help_text="For a given model version"
    )

    class Meta:
        ordering = ["pk"]
        constraints = [models.UniqueConstraint(fields=["experiment", "name"], name="rec_variant_unique_name")]

    def __str__(self) -> str:
        return f"{self.experiment.name}: {self.name}"


class PlacementDay(models.Model):
    """Per placement, variant and day: what blocks were shown and what they earned. Rebuilt from events by a task."""

    day = models.DateField()
    placement = models.CharField(max_length=40)
    variant = models.CharField(max_length=80, blank=True, default="", help_text="experiment:variant, or empty")
    impressions = models.PositiveIntegerField(default=0, help_text="Blocks rendered")
    items_shown = models.PositiveIntegerField(default=0)
    exploration_items = models.PositiveIntegerField(default=0, help_text="Items shown as new-product exploration")
    clicks = models.PositiveIntegerField(default=0)
    add_to_carts = models.PositiveIntegerField(default=0, help_text="Attributed to a click in this placement")
    orders = models.PositiveIntegerField(default=0, help_text="Attributed purchases (distinct orders)")
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "placement", "variant"]
        constraints = [models.UniqueConstraint(fields=["day", "placement", "variant"], name="rec_placementday_unique")]

    def __str__(self) -> str:
        return f"{self.day} {self.placement} {self.variant}".strip()
