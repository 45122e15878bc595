"""What the app stores: behaviour events, its own view of the catalog, precomputed lists and runs."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from recommendations.conf import EVENT_TYPES


class EventType(models.TextChoices):
    VIEW = "view", _("View")
    ADD_TO_CART = "add_to_cart", _("Add to cart")
    REMOVE_FROM_CART = "remove_from_cart", _("Remove from cart")
    PURCHASE = "purchase", _("Purchase")
    FAVORITE = "favorite", _("Favourite")
    SEARCH = "search", _("Search")
    IMPRESSION = "impression", _("Recommendation impression")
    CLICK = "click", _("Recommendation click")


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

    event_id = models.CharField(max_length=64, unique=True, verbose_name=_("event id"))
    event_type = models.CharField(max_length=20, choices=EventType.choices, verbose_name=_("event type"))
    # The shopper: opaque host user id when logged in, the visitor cookie otherwise (both kept after login).
    user_id = models.CharField(max_length=64, blank=True, default="", verbose_name=_("user id"))
    visitor_id = models.CharField(max_length=64, blank=True, default="", verbose_name=_("visitor id"))
    shopper = models.CharField(
        max_length=70,
        help_text=_("u:<user_id> or v:<visitor_id>; what the engine groups by"),
        verbose_name=_("shopper"),
    )
    product_id = models.CharField(max_length=64, blank=True, default="", verbose_name=_("product id"))
    quantity = models.IntegerField(default=1, verbose_name=_("quantity"))
    value = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True, verbose_name=_("value"))
    query = models.CharField(max_length=255, blank=True, default="", verbose_name=_("query"))
    # When it happened: the client's clock when sane (and always for imported history), else receive time.
    occurred_at = models.DateTimeField(default=timezone.now, verbose_name=_("occurred at"))
    client_time = models.DateTimeField(null=True, blank=True, verbose_name=_("client time"))
    received_at = models.DateTimeField(default=timezone.now, verbose_name=_("received at"))
    placement = models.CharField(max_length=40, blank=True, default="", verbose_name=_("placement"))
    recommendation_id = models.CharField(max_length=64, blank=True, default="", verbose_name=_("recommendation id"))
    # The experiment arm that served the block ("<experiment id>:<variant name>"), stamped on its impression, and
    # copied onto the click and any attributed conversion.
    variant = models.CharField(max_length=80, blank=True, default="", db_default="", verbose_name=_("variant"))
    context = models.JSONField(default=dict, blank=True, verbose_name=_("context"))

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
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

    product_id = models.CharField(max_length=64, unique=True, verbose_name=_("product id"))
    name = models.CharField(max_length=255, blank=True, default="", verbose_name=_("name"))
    category = models.CharField(max_length=255, blank=True, default="", db_index=True, verbose_name=_("category"))
    # Every category of a product in more than one (PRODUCT_FIELDS' Values(..., pick="all")), `category` first.
    categories = models.JSONField(default=list, blank=True, verbose_name=_("categories"))
    brand = models.CharField(max_length=255, blank=True, default="", verbose_name=_("brand"))
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True, verbose_name=_("price"))
    in_stock = models.BooleanField(default=True, verbose_name=_("in stock"))
    active = models.BooleanField(default=True, verbose_name=_("active"))
    text = models.TextField(blank=True, default="", verbose_name=_("text"))
    created_at = models.DateTimeField(null=True, blank=True, verbose_name=_("created at"))
    sales_count = models.PositiveIntegerField(default=0, verbose_name=_("sales count"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("product profile")
        verbose_name_plural = _("product profiles")

    def __str__(self) -> str:
        return self.name or self.product_id


class ProductChange(models.Model):
    """A product came back in stock or got cheaper, noted where profiles are written (catalog.upsert_profiles).

    The back-in-stock and price-drop e-mail flows read the recent ones (push.triggers); the hourly send prunes
    rows older than a week, which no trigger reads.
    """

    class Kind(models.TextChoices):
        BACK_IN_STOCK = "back_in_stock", _("Back in stock")
        PRICE_DROP = "price_drop", _("Price drop")

    product_id = models.CharField(max_length=64, verbose_name=_("product id"))
    kind = models.CharField(max_length=20, choices=Kind.choices, verbose_name=_("kind"))
    old = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text=_("The price before"), verbose_name=_("old")
    )
    new = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text=_("The price after"), verbose_name=_("new")
    )
    at = models.DateTimeField(default=timezone.now, verbose_name=_("at"))

    class Meta:
        verbose_name = _("product change")
        verbose_name_plural = _("product changes")
        indexes = [models.Index(fields=["kind", "at"], name="rec_product_change_kind_at")]

    def __str__(self) -> str:
        return f"{self.product_id} {self.kind} {self.at:%Y-%m-%d %H:%M}"


class RecommendationSet(models.Model):
    """One precompute's output. Readers use the active set only, so a set is built whole, then switched on."""

    class Status(models.TextChoices):
        BUILDING = "building", _("Building")
        ACTIVE = "active", _("Active")
        RETIRED = "retired", _("Retired")

    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    activated_at = models.DateTimeField(null=True, blank=True, verbose_name=_("activated at"))
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.BUILDING, db_index=True, verbose_name=_("status")
    )
    algorithm = models.CharField(max_length=60, default="cooccurrence", verbose_name=_("algorithm"))
    stats = models.JSONField(default=dict, blank=True, verbose_name=_("stats"))

    class Meta:
        verbose_name = _("recommendation set")
        verbose_name_plural = _("recommendation sets")

    def __str__(self) -> str:
        return f"Set #{self.pk} ({self.status})"


class StoredList(models.Model):
    """One ranked list: a shopper's for_you, a product's similar, or the shop-wide trending list.

    The items sit in one JSON array ([[product_id, score, reason], ...]) so serving a block is one indexed read.
    """

    recommendation_set = models.ForeignKey(
        RecommendationSet, on_delete=models.CASCADE, related_name="lists", verbose_name=_("recommendation set")
    )
    placement = models.CharField(max_length=40, verbose_name=_("placement"))
    # Shopper key for per-shopper lists, product id for per-product lists, "" (or a category) for shared ones.
    subject = models.CharField(max_length=70, blank=True, default="", verbose_name=_("subject"))
    items = models.JSONField(default=list, verbose_name=_("items"))

    class Meta:
        verbose_name = _("stored list")
        verbose_name_plural = _("stored lists")
        constraints = [
            models.UniqueConstraint(fields=["recommendation_set", "placement", "subject"], name="rec_storedlist_unique")
        ]

    def __str__(self) -> str:
        return f"{self.placement}:{self.subject or '*'}"


class PrecomputeRun(models.Model):
    """A precompute as staff see it in the admin: state, progress and what it produced."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, verbose_name=_("status"))
    progress = models.FloatField(default=0.0, help_text=_("0 to 1"), verbose_name=_("progress"))
    stage = models.CharField(max_length=60, blank=True, default="", verbose_name=_("stage"))
    task_id = models.CharField(max_length=64, blank=True, default="", verbose_name=_("task id"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))
    # Who runs it and whether they are alive (training.liveness): the worker writes heartbeat_at while it works; a run
    # whose heartbeat is too old lost its worker and is taken over, which counts an attempt and notes it in takeovers.
    heartbeat_at = models.DateTimeField(null=True, blank=True, verbose_name=_("heartbeat at"))
    attempts = models.PositiveIntegerField(
        default=0,
        help_text=_("How many times a worker started this run; more than one means a worker was lost"),
        verbose_name=_("attempts"),
    )
    worker = models.CharField(
        max_length=200, blank=True, default="", help_text=_("host:pid of the current attempt"), verbose_name=_("worker")
    )
    takeovers = models.JSONField(default=list, blank=True, verbose_name=_("takeovers"))
    recommendation_set = models.ForeignKey(
        RecommendationSet,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="runs",
        verbose_name=_("recommendation set"),
    )
    stats = models.JSONField(default=dict, blank=True, verbose_name=_("stats"))
    error = models.TextField(blank=True, default="", verbose_name=_("error"))

    class Meta:
        verbose_name = _("precompute run")
        verbose_name_plural = _("precompute runs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Precompute #{self.pk} {self.status}"


class TrainingRun(models.Model):
    """One retrain: its progress, every candidate's metrics, the model it chose and whether that model serves.

    The registry of models is this table: a run that passed the gate and wrote a hash-checked artefact can serve;
    at most one run serves at a time (`is_serving`), and staff can switch back to any earlier run with an artefact.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded: new model serving")
        KEPT_OLD = "kept_old", _("Succeeded: old model kept")
        SKIPPED = "skipped", _("Skipped: another retrain was running")
        FAILED = "failed", _("Failed")

    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True, verbose_name=_("status")
    )
    progress = models.FloatField(default=0.0, help_text=_("0 to 1"), verbose_name=_("progress"))
    stage = models.CharField(max_length=60, blank=True, default="", verbose_name=_("stage"))
    task_id = models.CharField(max_length=64, blank=True, default="", verbose_name=_("task id"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))
    heartbeat_at = models.DateTimeField(null=True, blank=True, verbose_name=_("heartbeat at"))
    # As on PrecomputeRun: attempts, the current attempt's worker and the takeovers after a worker was lost.
    attempts = models.PositiveIntegerField(
        default=0,
        help_text=_("How many times a worker started this run; more than one means a worker was lost"),
        verbose_name=_("attempts"),
    )
    worker = models.CharField(
        max_length=200, blank=True, default="", help_text=_("host:pid of the current attempt"), verbose_name=_("worker")
    )
    takeovers = models.JSONField(default=list, blank=True, verbose_name=_("takeovers"))
    stage_seconds = models.JSONField(default=dict, blank=True, verbose_name=_("stage seconds"))
    data_stats = models.JSONField(default=dict, blank=True, verbose_name=_("data stats"))
    # {candidate: {"validation": {...metrics}, "test": {...}, "fit": {...stats}, "seconds": s}}
    candidates = models.JSONField(default=dict, blank=True, verbose_name=_("candidates"))
    chosen = models.CharField(
        max_length=120, blank=True, default="", help_text=_("The recipe this run picked"), verbose_name=_("chosen")
    )
    validation_ndcg = models.FloatField(null=True, blank=True, verbose_name=_("validation ndcg"))
    test_metrics = models.JSONField(default=dict, blank=True, verbose_name=_("test metrics"))
    gate = models.JSONField(default=dict, blank=True, verbose_name=_("gate"))
    message = models.TextField(
        blank=True, default="", help_text=_("What happened, in a sentence"), verbose_name=_("message")
    )
    error = models.TextField(blank=True, default="", verbose_name=_("error"))
    artefact_path = models.CharField(max_length=500, blank=True, default="", verbose_name=_("artefact path"))
    artefact_sha256 = models.CharField(max_length=64, blank=True, default="", verbose_name=_("artefact sha256"))
    data_until = models.DateTimeField(
        null=True, blank=True, help_text=_("Newest event the model learned from"), verbose_name=_("data until")
    )
    is_serving = models.BooleanField(default=False, db_index=True, verbose_name=_("is serving"))
    activated_at = models.DateTimeField(null=True, blank=True, verbose_name=_("activated at"))
    activated_by = models.CharField(max_length=150, blank=True, default="", verbose_name=_("activated by"))

    class Meta:
        verbose_name = _("training run")
        verbose_name_plural = _("training runs")
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
        MODEL = "model", _("The serving model's lists")
        TRENDING = "trending", _("Trending only")
        POPULAR = "popular", _("Best sellers only")
        NEWEST = "newest", _("Newest arrivals only")

    name = models.CharField(
        max_length=40,
        unique=True,
        help_text=_("for_you, similar, bought_together, trending, ..."),
        verbose_name=_("name"),
    )
    title = models.CharField(
        max_length=120,
        blank=True,
        default="",
        help_text=_("Shown to shoppers above the block"),
        verbose_name=_("title"),
    )
    enabled = models.BooleanField(
        default=True, help_text=_("Off: the block renders nothing"), verbose_name=_("enabled")
    )
    size = models.PositiveSmallIntegerField(default=8, help_text=_("Items per block, 1 to 50"), verbose_name=_("size"))
    allow_bought = models.BooleanField(
        default=False, help_text=_("May show products the shopper already bought"), verbose_name=_("allow bought")
    )
    max_per_category = models.PositiveSmallIntegerField(
        default=0, help_text=_("Diversity cap; 0 = none"), verbose_name=_("max per category")
    )
    max_per_brand = models.PositiveSmallIntegerField(
        default=0, help_text=_("Diversity cap; 0 = none"), verbose_name=_("max per brand")
    )
    fallback = models.JSONField(
        default=list,
        blank=True,
        help_text=_("What fills a short block, in order: rules, similar, trending_category, ..."),
        verbose_name=_("fallback"),
    )
    strategy = models.CharField(
        max_length=20, choices=Strategy.choices, default=Strategy.MODEL, verbose_name=_("strategy")
    )
    exploration_share = models.FloatField(
        default=0.0,
        help_text=_("Share of slots (0 to 0.5) given to new products with no events yet, so they gather feedback"),
        verbose_name=_("exploration share"),
    )
    exploration_max_age_days = models.PositiveSmallIntegerField(
        default=14, help_text=_("How young a product counts as new"), verbose_name=_("exploration max age days")
    )
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))
    updated_by = models.CharField(max_length=150, blank=True, default="", verbose_name=_("updated by"))

    class Meta:
        verbose_name = _("placement")
        verbose_name_plural = _("placements")
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

    name = models.CharField(max_length=120, verbose_name=_("name"))
    active = models.BooleanField(default=True, verbose_name=_("active"))
    placements = models.JSONField(
        default=list, blank=True, help_text=_("Placement names; empty = every placement"), verbose_name=_("placements")
    )
    price_min = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True, verbose_name=_("price min"))
    price_max = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True, verbose_name=_("price max"))
    starts_at = models.DateTimeField(null=True, blank=True, verbose_name=_("starts at"))
    ends_at = models.DateTimeField(null=True, blank=True, verbose_name=_("ends at"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))
    updated_by = models.CharField(max_length=150, blank=True, default="", verbose_name=_("updated by"))

    objects = RuleWindowQuerySet.as_manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name


class ColdStartRule(AbstractRule):
    """Who (an audience) sees what (a source of products) where (placements) and when, for shoppers the model
    cannot serve yet. The highest priority live rule that matches a shopper and a placement fills the block first."""

    class Audience(models.TextChoices):
        EVERYONE = "everyone", _("Everyone")
        ANONYMOUS = "anonymous", _("Anonymous visitors")
        NEW_ACCOUNT = "new_account", _("Accounts younger than N days")
        FEW_EVENTS = "few_events", _("Shoppers with fewer than N events")
        NO_PURCHASES = "no_purchases", _("Shoppers with no purchases yet")
        CATEGORY = "category", _("Arriving in a category")
        CAMPAIGN = "campaign", _("Arriving from a campaign (utm_campaign)")

    class Source(models.TextChoices):
        TRENDING = "trending", _("Trending overall")
        TRENDING_CATEGORY = "trending_category", _("Trending in the context category (or the category given)")
        TOP_SELLERS = "top_sellers", _("Top sellers over the last N days")
        NEWEST = "newest", _("Newest arrivals")
        HAND_PICKED = "hand_picked", _("Hand-picked products, in order")
        BRAND = "brand", _("A brand's best sellers")
        PRICE_BAND = "price_band", _("Best sellers in a price band")

    priority = models.IntegerField(
        default=0, help_text=_("Higher wins when several rules match"), verbose_name=_("priority")
    )
    audience = models.CharField(
        max_length=20, choices=Audience.choices, default=Audience.EVERYONE, verbose_name=_("audience")
    )
    audience_number = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("N for 'fewer than N' / 'N days'"), verbose_name=_("audience number")
    )
    audience_value = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text=_("The category slug or campaign name the audience arrives with"),
        verbose_name=_("audience value"),
    )
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.TRENDING, verbose_name=_("source"))
    source_value = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text=_("The category for trending in a category, or the brand"),
        verbose_name=_("source value"),
    )
    source_days = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Window for top sellers / newest"), verbose_name=_("source days")
    )
    products = models.JSONField(
        default=list, blank=True, help_text=_("Hand-picked product ids, in order"), verbose_name=_("products")
    )

    class Meta:
        verbose_name = _("cold start rule")
        verbose_name_plural = _("cold start rules")
        ordering = ["-priority", "pk"]


class MerchandisingRule(AbstractRule):
    """Boost, bury, pin or exclude products after the model has ranked them, before the fallback fills the block."""

    class Action(models.TextChoices):
        BOOST = "boost", _("Boost (move up)")
        BURY = "bury", _("Bury (move down)")
        PIN = "pin", _("Pin to a position")
        EXCLUDE = "exclude", _("Exclude")

    class Target(models.TextChoices):
        PRODUCT = "product", _("A product")
        CATEGORY = "category", _("A category")
        BRAND = "brand", _("A brand")
        PRICE_BAND = "price_band", _("A price band")

    priority = models.IntegerField(
        default=0, help_text=_("Higher is applied later, so it has the last word"), verbose_name=_("priority")
    )
    action = models.CharField(max_length=10, choices=Action.choices, verbose_name=_("action"))
    target = models.CharField(max_length=12, choices=Target.choices, verbose_name=_("target"))
    target_value = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text=_("The product id, category slug or brand name"),
        verbose_name=_("target value"),
    )
    position = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text=_("1-based slot for a pin"), verbose_name=_("position")
    )
    strength = models.FloatField(
        default=2.0, help_text=_("How far a boost or bury moves: score x or / this"), verbose_name=_("strength")
    )

    class Meta:
        verbose_name = _("merchandising rule")
        verbose_name_plural = _("merchandising rules")
        ordering = ["priority", "pk"]


class Experiment(models.Model):
    """An A/B/n test on one placement: shoppers are bucketed by a hash of their id and the experiment's salt."""

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        RUNNING = "running", _("Running")
        STOPPED = "stopped", _("Stopped")

    name = models.CharField(max_length=120, verbose_name=_("name"))
    placement = models.CharField(max_length=40, verbose_name=_("placement"))
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True, verbose_name=_("status")
    )
    salt = models.CharField(
        max_length=32, blank=True, default="", help_text=_("Bucketing salt; fixed at start"), verbose_name=_("salt")
    )
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started at"))
    stopped_at = models.DateTimeField(null=True, blank=True, verbose_name=_("stopped at"))
    winner = models.ForeignKey(
        "ExperimentVariant",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="won",
        verbose_name=_("winner"),
    )
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))

    class Meta:
        verbose_name = _("experiment")
        verbose_name_plural = _("experiments")
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
        MODEL = "model", _("The serving model (as without the experiment)")
        MODEL_VERSION = "model_version", _("A given trained model version")
        TRENDING = "trending", _("Trending only")
        POPULAR = "popular", _("Best sellers only")
        NEWEST = "newest", _("Newest arrivals only")
        HOLDOUT = "holdout", _("Hold out: send nothing (e-mail flows only)")

    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="variants", verbose_name=_("experiment")
    )
    name = models.CharField(
        max_length=40,
        help_text=_("Short, stamped on every impression and click: A, B, control..."),
        verbose_name=_("name"),
    )
    share = models.FloatField(
        default=0.5,
        help_text=_("Share of the traffic; shares are normalised over the variants"),
        verbose_name=_("share"),
    )
    strategy = models.CharField(
        max_length=20, choices=Strategy.choices, default=Strategy.MODEL, verbose_name=_("strategy")
    )
    training_run = models.ForeignKey(
        TrainingRun,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        help_text=_("For a given model version"),
        verbose_name=_("training run"),
    )

    class Meta:
        verbose_name = _("experiment variant")
        verbose_name_plural = _("experiment variants")
        ordering = ["pk"]
        constraints = [models.UniqueConstraint(fields=["experiment", "name"], name="rec_variant_unique_name")]

    def __str__(self) -> str:
        return f"{self.experiment.name}: {self.name}"


class PlacementDay(models.Model):
    """Per placement, variant and day: what blocks were shown and what they earned. Rebuilt from events by a task."""

    day = models.DateField(verbose_name=_("day"))
    placement = models.CharField(max_length=40, verbose_name=_("placement"))
    variant = models.CharField(
        max_length=80, blank=True, default="", help_text=_("experiment:variant, or empty"), verbose_name=_("variant")
    )
    impressions = models.PositiveIntegerField(default=0, help_text=_("Blocks rendered"), verbose_name=_("impressions"))
    items_shown = models.PositiveIntegerField(default=0, verbose_name=_("items shown"))
    exploration_items = models.PositiveIntegerField(
        default=0, help_text=_("Items shown as new-product exploration"), verbose_name=_("exploration items")
    )
    clicks = models.PositiveIntegerField(default=0, verbose_name=_("clicks"))
    add_to_carts = models.PositiveIntegerField(
        default=0, help_text=_("Attributed to a click in this placement"), verbose_name=_("add to carts")
    )
    orders = models.PositiveIntegerField(
        default=0, help_text=_("Attributed purchases (distinct orders)"), verbose_name=_("orders")
    )
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0, verbose_name=_("revenue"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("placement day")
        verbose_name_plural = _("placement days")
        ordering = ["-day", "placement", "variant"]
        constraints = [models.UniqueConstraint(fields=["day", "placement", "variant"], name="rec_placementday_unique")]

    def __str__(self) -> str:
        return f"{self.day} {self.placement} {self.variant}".strip()


class ErasureRequest(models.Model):
    """One erasure of shoppers' data (privacy.erase): who asked, when, through what, and how many rows went.

    Never the ids: `subject_hashes` holds a keyed hash (HMAC under the site's SECRET_KEY) of each id, so staff can
    later show that a given id was erased, while the table itself names nobody.
    """

    requested_by = models.CharField(max_length=150, blank=True, default="", verbose_name=_("requested by"))
    requested_at = models.DateTimeField(default=timezone.now, db_index=True, verbose_name=_("requested at"))
    via = models.CharField(
        max_length=20,
        blank=True,
        default="",
        help_text=_("python, command, admin, api or user_deleted"),
        verbose_name=_("via"),
    )
    subjects = models.PositiveIntegerField(
        default=0, help_text=_("How many ids were named"), verbose_name=_("subjects")
    )
    subject_hashes = models.JSONField(default=list, blank=True, verbose_name=_("subject hashes"))
    counts = models.JSONField(
        default=dict, blank=True, help_text=_("Rows or keys removed, per table or cache"), verbose_name=_("counts")
    )
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished at"))

    class Meta:
        verbose_name = _("erasure request")
        verbose_name_plural = _("erasure requests")
        ordering = ["-requested_at", "-pk"]

    def __str__(self) -> str:
        return f"Erasure #{self.pk} ({self.subjects})"


class ConsentChoice(models.Model):
    """A signed-in shopper's own answer to "may the shop learn from what I do and personalise for me", so it holds on
    every device they sign in on (tracking.consent reads it before any cookie).

    Kept under a keyed hash of the user id (tracking.consent.choice_subject), never the id: an erasure keeps an
    opt-out, the one thing a shopper who said no wants remembered, without the table naming anybody.
    """

    subject = models.CharField(max_length=64, unique=True, verbose_name=_("subject hash"))
    personalised = models.BooleanField(verbose_name=_("personalised"))
    changed_at = models.DateTimeField(default=timezone.now, verbose_name=_("changed at"))

    class Meta:
        verbose_name = _("consent choice")
        verbose_name_plural = _("consent choices")

    def __str__(self) -> str:
        return f"{self.subject[:12]}… {'yes' if self.personalised else 'no'}"


# -- push: e-mails of recommendations (recommendations/push/, docs/email.md) ------------------------------------------


class Flow(models.Model):
    """A push flow: whom to e-mail and when (the trigger), with the products of which placement, under which caps.

    The trigger is a kind plus the numbers an event pattern needs (`window_hours`, `delay_hours`); push.triggers
    gives each kind its meaning, so a new kind adds a choice and a class there, not columns here.
    """

    class Trigger(models.TextChoices):
        WEEKLY_PICKS = "weekly_picks", _("Weekly picks (once a week)")
        BROWSE_ABANDONMENT = "browse_abandonment", _("Browse abandonment (viewed products, added none to the cart)")
        CART_ABANDONMENT = "cart_abandonment", _("Cart abandonment (added to the cart, did not buy)")
        BACK_IN_STOCK = "back_in_stock", _("Back in stock (a product they viewed or favourited)")
        PRICE_DROP = "price_drop", _("Price drop (a product they viewed or favourited got cheaper)")
        AFTER_PURCHASE = "after_purchase", _("After a purchase (N days later: what goes with it)")
        WIN_BACK = "win_back", _("Win-back (no visit for N days)")

    name = models.CharField(max_length=120, verbose_name=_("name"))
    # email:<slug> is the placement of the flow's clicks and impressions, and Event.placement holds 40 characters.
    slug = models.SlugField(
        max_length=34,
        unique=True,
        help_text=_("Clicks in its e-mails are recorded on the placement email:<slug>"),
        verbose_name=_("slug"),
    )
    trigger = models.CharField(max_length=40, choices=Trigger.choices, verbose_name=_("trigger"))
    window_hours = models.PositiveIntegerField(
        default=24,
        help_text=_("Event triggers: what the shopper did in the last N hours"),
        verbose_name=_("window (hours)"),
    )
    delay_hours = models.PositiveIntegerField(
        default=2,
        help_text=_("Event triggers: their last such event at least M hours ago (they left)"),
        verbose_name=_("delay (hours)"),
    )
    placement = models.CharField(
        max_length=40,
        default="for_you",
        help_text=_("Whose pipeline picks the products: for_you, or similar (to the viewed products)"),
        verbose_name=_("placement"),
    )
    size = models.PositiveSmallIntegerField(default=6, help_text=_("Products per e-mail"), verbose_name=_("size"))
    min_good_items = models.PositiveSmallIntegerField(
        default=3,
        help_text=_("Skip the e-mail when fewer products come from the shopper's own lists (not best sellers)"),
        verbose_name=_("minimum good products"),
    )
    subject = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text=_("Translated, then rendered as a template ({{ products.0.name }}); blank: the trigger's own"),
        verbose_name=_("subject"),
    )
    enabled = models.BooleanField(default=False, verbose_name=_("enabled"))
    cap_days = models.PositiveSmallIntegerField(
        default=7,
        help_text=_("At most one e-mail of this flow per shopper in this many days (0: only the global cap)"),
        verbose_name=_("cap (days)"),
    )
    days = models.PositiveSmallIntegerField(
        default=7,
        help_text=_("After a purchase: this many days after it; win-back: this many days without a visit"),
        verbose_name=_("days"),
    )
    price_drop_percent = models.PositiveSmallIntegerField(
        default=10,
        help_text=_("Price drop: the price fell by at least this many percent"),
        verbose_name=_("price drop (%)"),
    )
    # None: the trigger's default (on for weekly picks, whose week leaves a day to wait in; off for event triggers).
    best_hour = models.BooleanField(
        null=True,
        blank=True,
        default=None,
        help_text=_("Wait for the hour the shopper is usually active (within a day); blank: on for weekly picks only"),
        verbose_name=_("send at the shopper's best hour"),
    )
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("flow")
        verbose_name_plural = _("flows")
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name

    @property
    def event_placement(self) -> str:
        """The placement its e-mails' clicks and impressions are recorded on."""
        return f"email:{self.slug}"


class Message(models.Model):
    """One e-mail of a flow to a shopper for one period, sent or skipped; `key` makes it happen at most once.

    The row is written (status "sending") in its own transaction before the e-mail goes out, so a retry or a second
    worker finds the key taken and sends nothing; push.sending says what becomes of a row left "sending".
    """

    class Status(models.TextChoices):
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        SKIPPED_CAP = "skipped_cap", _("Skipped: frequency cap")
        SKIPPED_WEAK = "skipped_weak", _("Skipped: too few good products")
        SKIPPED_NO_CONSENT = "skipped_no_consent", _("Skipped: no consent")
        SKIPPED_HOLDOUT = "skipped_holdout", _("Skipped: experiment hold-out")
        FAILED = "failed", _("Failed")

    key = models.CharField(max_length=200, unique=True, verbose_name=_("idempotency key"))
    # PROTECT: the row is the record that an e-mail went out, and its unsubscribe link finds the shopper through it;
    # a flow that sent anything is switched off, not deleted.
    flow = models.ForeignKey(Flow, on_delete=models.PROTECT, related_name="messages", verbose_name=_("flow"))
    user_id = models.CharField(max_length=64, verbose_name=_("user id"))
    period = models.CharField(max_length=32, verbose_name=_("period"))
    status = models.CharField(max_length=20, choices=Status.choices, db_index=True, verbose_name=_("status"))
    recommendation_id = models.CharField(
        max_length=64, blank=True, default="", db_index=True, verbose_name=_("recommendation id")
    )
    products = models.JSONField(default=list, blank=True, verbose_name=_("products"))
    # The arm of the flow's experiment (email:<slug>) this shopper was in, "<experiment id>:<variant>", as on events.
    variant = models.CharField(max_length=80, blank=True, default="", verbose_name=_("variant"))
    subject = models.CharField(max_length=255, blank=True, default="", verbose_name=_("subject"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created at"))
    sent_at = models.DateTimeField(null=True, blank=True, verbose_name=_("sent at"))
    error = models.TextField(blank=True, default="", verbose_name=_("error"))

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user_id", "created_at"], name="rec_message_user_created")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class EmailConsent(models.Model):
    """A shopper's answer to "may the shop send me recommendations by e-mail", and the flows they left.

    Read by push.consent when RECOMMENDATIONS["EMAIL_CONSENT"] is the app's own; with a host's callable, a row that
    says no (an unsubscribe through the app's link) still wins until the shopper opts in again.
    """

    user_id = models.CharField(max_length=64, unique=True, verbose_name=_("user id"))
    opted_in = models.BooleanField(default=False, verbose_name=_("opted in"))
    opted_in_at = models.DateTimeField(null=True, blank=True, verbose_name=_("opted in at"))
    opted_out_at = models.DateTimeField(null=True, blank=True, verbose_name=_("opted out at"))
    opted_out_via = models.CharField(
        max_length=34, blank=True, default="", help_text=_("The flow whose link they used"), verbose_name=_("via")
    )
    unsubscribed_flows = models.JSONField(
        default=list, blank=True, help_text=_("Slugs of the flows they left"), verbose_name=_("unsubscribed flows")
    )
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated at"))

    class Meta:
        verbose_name = _("e-mail consent")
        verbose_name_plural = _("e-mail consents")

    def __str__(self) -> str:
        return f"{self.user_id}: {'yes' if self.opted_in else 'no'}"


class Unsubscribe(models.Model):
    """One shopper leaving e-mail through a flow's link, counted for the flow's analytics; no user id is kept.

    Written only when the answer changes (a second one-click POST writes nothing): a leave through the one-click
    POST (every flow), the preference page's "unsubscribe from all", or its unticking of one flow.
    """

    class Kind(models.TextChoices):
        ONE_CLICK = "one_click", _("One-click (mail client)")
        ALL = "all", _("Preference page: every flow")
        FLOW = "flow", _("Preference page: this flow")

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="unsubscribes", verbose_name=_("flow"))
    kind = models.CharField(max_length=10, choices=Kind.choices, verbose_name=_("kind"))
    created_at = models.DateTimeField(default=timezone.now, db_index=True, verbose_name=_("created at"))

    class Meta:
        verbose_name = _("unsubscribe")
        verbose_name_plural = _("unsubscribes")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.flow_id} {self.kind} {self.created_at:%Y-%m-%d}"
