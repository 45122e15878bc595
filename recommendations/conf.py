"""The one `RECOMMENDATIONS` settings dict: defaults, lazy reads and the system check that guards it.

Reads are lazy (every attribute access looks at `django.conf.settings`) so `override_settings` works in
tests and nothing is frozen at import time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error, register
from django.utils.translation import gettext_noop

EVENT_TYPES = (
    "view",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "favorite",
    "search",
    "impression",
    "click",
)

DEFAULTS: dict[str, Any] = {
    # The host's product model ("app_label.Model") and where each feature lives on it: an ORM lookup following
    # to-one relations, an aggregate (Min("offers__price")), product_fields.Values(...) for a to-many lookup, or a
    # callable f(product) (slow: called per product). See docs/product-fields.md.
    "PRODUCT_MODEL": None,
    "PRODUCT_ID_FIELD": "pk",
    "PRODUCT_FIELDS": {},
    # A dotted path to a recommendations.product_fields.ProductAdapter subclass: which products have profiles,
    # computed values, and the profile id a product's events go under (a variant's parent). None: no adapter.
    "PRODUCT_ADAPTER": None,
    # How much each event type says about a shopper's taste; types missing here do not train.
    "EVENT_WEIGHTS": {"view": 1.0, "favorite": 3.0, "add_to_cart": 4.0, "purchase": 8.0, "click": 1.0},
    # Older events count less: weight halves every this many days, measured from the newest event.
    "RECENCY_HALF_LIFE_DAYS": 30.0,
    # Trending looks at this recent window (days before the newest event) with its own faster decay.
    "TRENDING_WINDOW_DAYS": 14.0,
    "TRENDING_HALF_LIFE_DAYS": 3.0,
    # How many items are precomputed per shopper / per product, and how many a block shows.
    "TOP_N": 50,
    "SIMILAR_N": 20,
    "BLOCK_SIZE": 8,
    # Purchase lists (engine.purchases). bought_together: purchases without an order id in their context are one
    # basket when the same shopper's purchases are at most PURCHASE_WINDOW_MINUTES apart; a pair needs
    # BOUGHT_TOGETHER_MIN_ORDERS baskets; score = co / (count_anchor^ALPHA * count_other^(1-ALPHA)) x support
    # shrinkage, so lower ALPHA punishes best sellers more. buy_again: repeat buyers / (buyers + SHRINKAGE),
    # listed from BUY_AGAIN_MIN_SCORE.
    "PURCHASE_WINDOW_MINUTES": 10,
    "BOUGHT_TOGETHER_MIN_ORDERS": 2,
    "BOUGHT_TOGETHER_ALPHA": 0.5,
    "BUY_AGAIN_SHRINKAGE": 5.0,
    "BUY_AGAIN_MIN_SCORE": 0.1,
    # Refresh a shopper's for_you list within seconds of their events (between full precomputes).
    "REALTIME_REFRESH": True,
    "REFRESH_DEBOUNCE_SECONDS": 2,
    # Server-to-server ingestion: a request with this key in the header may write any shopper's events.
    "WRITE_KEY": "",
    "WRITE_KEY_HEADER": "X-Recommendations-Key",
    # Where the app's tasks run (tasks.task_mode): "celery" (a broker and workers), "inline" (in-process, after
    # commit) or "auto": inline when the project has no Celery app, no broker_url or task_always_eager set.
    "TASKS": "auto",
    # API rate limits by throttle scope (api/throttling.py); a scope left out here comes from REST_FRAMEWORK's
    # DEFAULT_THROTTLE_RATES, else the app's own default there, so the API works with no configuration.
    "THROTTLE_RATES": {},
    # Ingest API limits.
    "INGEST_MAX_EVENTS": 500,
    "INGEST_MAX_BYTES": 512 * 1024,
    # The oldest event time accepted, in days before the server's clock: an event timestamped earlier is refused
    # (API: a 400 naming the event's index and "timestamp"; import_events: a bad row). The newest is the server's
    # clock plus api.validation.CLOCK_SKEW (five minutes): the API stores an event from a clock further ahead at the
    # time it was received, import_events refuses the row. docs/operations.md says why.
    "EVENT_MAX_AGE_DAYS": 3650,
    # Retention (recommendations.retention): events older than this many days are deleted by the daily
    # `apply_retention` task and command. None keeps them (the app's default; the demo sets one). Impressions may
    # have their own, shorter retention (None: the events' one).
    "EVENT_RETENTION_DAYS": None,
    # Training knows shoppers by an HMAC of their id under this key (training.loading.pseudonym); None: SECRET_KEY.
    "PSEUDONYM_KEY": None,
    "IMPRESSION_RETENTION_DAYS": None,
    # Consent (tracking.consent, docs/privacy.md). CONSENT_CHECK: a dotted path to a callable taking the request
    # and returning a bool (or a tracking.consent.Consent): may this shopper be tracked and personalised. The default
    # reads the signed-in shopper's own choice, then the CONSENT_COOKIE_NAME cookie ("granted" / "denied"), then
    # `Sec-GPC: 1`; when none says anything, CONSENT_REQUIRED decides: True (opt-in, as the GDPR and PIPL ask) tracks
    # nobody before they agree, False (opt-out) tracks until they refuse. ERASE_ON_OPT_OUT: a shopper who refuses
    # through the app's consent view also loses what was kept about them so far.
    "CONSENT_CHECK": "recommendations.tracking.consent.default_consent",
    "CONSENT_COOKIE_NAME": "rec_consent",
    "CONSENT_COOKIE_AGE": 365 * 24 * 3600,
    "CONSENT_REQUIRED": True,
    "ERASE_ON_OPT_OUT": False,
    # The anonymous visitor cookie.
    "VISITOR_COOKIE_NAME": "rec_vid",
    "VISITOR_COOKIE_AGE": 365 * 24 * 3600,
    # Training (training.runs). Candidates fit side by side on one temporal split; the best by validation
    # NDCG@10 (or a blend of the best, when BLEND) becomes the new model if it passes the gate.
    "CANDIDATES": ["popularity", "trending", "item_knn", "ease", "ease_recency", "ease_lowrank", "content", "neural"],
    "BLEND": True,
    # Give one slot of each list to the new product (no events yet) a feature-reading candidate ranks highest for the
    # shopper, when validation shows it reaches new products at a cost within 0.5 % NDCG@10 (engine/coldslot.py).
    "COLD_SLOT": True,
    "VALIDATION_FRACTION": 0.1,
    "TEST_FRACTION": 0.1,
    # How those shares are held out, in time either way: "global" (two cuts on the time axis: the newest events of
    # the whole shop), "per_shopper" (each shopper's own newest events; see engine/split.py for the trade-off), or
    # "auto": global when at least 500 shoppers span its cut (engine.split.MIN_EVAL_SHOPPERS), else per_shopper.
    "SPLIT": "auto",
    "MAX_EVAL_SHOPPERS": 5000,
    # The new model serves only when its validation NDCG@10 >= the serving model's + this margin.
    "GATE_MARGIN": 0.0,
    # Refit the chosen recipe on every event (split data is for choosing; serving wants the newest signal).
    "REFIT_ON_ALL": True,
    # Cleaning: repeats of the same (shopper, product, type) within this many seconds count once; shoppers
    # with more events than this in any one minute are treated as bots and left out of training.
    "BURST_SECONDS": 30,
    "BOT_MAX_EVENTS_PER_MINUTE": 60,
    "EASE_MAX_ITEMS": 10000,
    # A retrain aims to end within this many seconds: the deep candidates (neural, sequence) fit after the others and
    # share what is left, each at most its own max_seconds. None: each takes its own max_seconds, however long.
    "RETRAIN_SECONDS": 110,
    # Neural model hyper-parameters (engine.neural.NeuralRecommender keyword arguments).
    "NEURAL": {},
    # With a trained model serving and a broker, the for_you stage runs as this many Celery tasks (a group,
    # spread over every worker on the default queue); 1 keeps it in the precompute task.
    "PRECOMPUTE_SHARDS": 1,
    # A running precompute or retrain writes a heartbeat on its row every RUN_HEARTBEAT_SECONDS; a run whose last
    # heartbeat is older than RUN_STALE_SECONDS lost its worker and is taken over (training.liveness), at most
    # RUN_MAX_ATTEMPTS times in all: a run that kills its worker every time (out of memory) then fails, said so.
    "RUN_HEARTBEAT_SECONDS": 15,
    "RUN_STALE_SECONDS": 90,
    "RUN_MAX_ATTEMPTS": 3,
    # Where trained models are written (a directory shared by all workers). None: <BASE_DIR>/var/models.
    "MODEL_DIR": None,
    # Training runs whose artefacts are kept (the serving one is always kept).
    "KEEP_MODELS": 5,
    # Block titles shown to shoppers, by placement (overrides PLACEMENTS[...]["title"]). A title is translated when
    # it is shown (a msgid of the app's catalogue, or the host's own), so it stays English here and in the admin.
    "TITLES": {},
    # The surfaces. Each key may be overridden alone (RECOMMENDATIONS["PLACEMENTS"]["similar"]["size"] = 4 keeps the
    # rest). size: items per block; allow_bought: may show what the shopper bought; max_per_category /
    # max_per_brand: diversity caps (0 = none); fallback: what fills a short block, in order (rules = the cold-start
    # rules staff set in the admin, similar = the page product's similar list, trending_category = trending in the
    # page's category, trending, popular). The personal-history surfaces have no fallback: they render nothing rather
    # than pretend; nor has bought_together (a filler under "Frequently bought together" would say what is not so).
    # for_you falls back to best sellers, not trending, so a new visitor is not shown the trending list twice
    # under two titles (and a page never fills a block from a list a block above showed under another title).
    # min_size: a block with fewer items (and fewer than its size) is not shown; bought_together needs 2.
    # After the first migrate, each placement's row in the admin (seeded from this) takes precedence (min_size
    # comes from here only).
    "PLACEMENTS": {
        "for_you": {
            "title": gettext_noop("Recommended for you"),
            "size": 8,
            "allow_bought": False,
            "max_per_category": 3,
            "max_per_brand": 3,
            "fallback": ["rules", "popular"],
        },
        "similar": {
            "title": gettext_noop("Similar products"),
            "size": 8,
            "allow_bought": False,
            "max_per_category": 0,
            "max_per_brand": 3,
            "fallback": ["rules", "trending_category", "trending", "popular"],
        },
        "bought_together": {
            "title": gettext_noop("Frequently bought together"),
            "size": 4,
            "allow_bought": False,
            "max_per_category": 0,
            "max_per_brand": 2,
            "fallback": [],
            "min_size": 2,
        },
        "trending": {
            "title": gettext_noop("Trending now"),
            "size": 8,
            "allow_bought": True,
            "max_per_category": 3,
            "max_per_brand": 3,
            "fallback": ["rules", "trending_category", "popular"],
        },
        "recently_viewed": {
            "title": gettext_noop("Recently viewed"),
            "size": 8,
            "allow_bought": True,
            "max_per_category": 0,
            "max_per_brand": 0,
            "fallback": [],
        },
        "buy_again": {
            "title": gettext_noop("Buy it again"),
            "size": 8,
            "allow_bought": True,
            "max_per_category": 0,
            "max_per_brand": 0,
            "fallback": [],
        },
    },
    # Serving: this session's events (the last SESSION_MINUTES) re-rank for_you with this share of the score; an
    # add to cart counts as in the cart for CART_DAYS unless removed or bought.
    "SESSION_MINUTES": 30,
    "SESSION_WEIGHT": 0.6,
    "CART_DAYS": 7,
    # A shopper's block is cached this long (any new event of theirs makes a new key); past the budget a block
    # skips its optional steps and fills from the shared lists.
    "BLOCK_CACHE_SECONDS": 30,
    "SERVING_BUDGET_MS": 150,
    # An add to cart or purchase of a product this long after a click on it in a block is attributed to the block.
    "ATTRIBUTION_HOURS": 24,
    # Health and metrics (recommendations.health, the `health/` and `metrics/` views; docs/operations.md). The
    # detailed health report and the metrics answer staff sessions and `Authorization: Bearer <METRICS_TOKEN>`
    # ("" = staff only); anyone else gets the bare liveness answer from `health/` and a 403 from `metrics/`. The
    # serving model and the active list set fail their checks past these ages (None: not checked); the broker and
    # the worker ping wait at most HEALTH_TIMEOUT_SECONDS.
    "METRICS_TOKEN": "",
    "HEALTH_MAX_MODEL_AGE_HOURS": 168,
    "HEALTH_MAX_LIST_AGE_HOURS": 6,
    "HEALTH_TIMEOUT_SECONDS": 1.0,
    # Push e-mails (recommendations/push/, docs/email.md). SITE_URL: the site's root as shoppers reach it
    # ("https://shop.example"); every link in an e-mail starts with it, and nothing is sent while it is "".
    # EMAIL_CONSENT: a dotted path to a callable (user) -> bool, may this shopper get marketing e-mail (the default
    # reads the app's EmailConsent rows); EMAIL_ADDRESS: (user) -> str, where to send it (default: user.email).
    # EMAIL_FROM: the From address (None: DEFAULT_FROM_EMAIL). EMAIL_MIN_HOURS_BETWEEN: at most one e-mail of any
    # flow per shopper in this many hours (Klaviyo's Smart Sending window); each flow has its own cap in days too.
    # EMAIL_UNSUBSCRIBE_MAILTO: an address for a second, mailto: List-Unsubscribe entry ("" leaves it out).
    # Timing and language (docs/email.md): EMAIL_QUIET_HOURS (start, end) in the shopper's local hours, when nothing
    # is sent (None: never quiet); EMAIL_TIME_ZONE: a dotted path to (user) -> str | None, the shopper's IANA zone
    # (None or no answer: TIME_ZONE); EMAIL_LANGUAGE: (user) -> str | None, the language of their e-mails (None: the
    # user's `language` attribute, else LANGUAGE_CODE). A flow sent at the shopper's best hour learns it from their
    # events of the last EMAIL_BEST_HOUR_DAYS days, when there are at least EMAIL_BEST_HOUR_MIN_EVENTS of them.
    "SITE_URL": "",
    "EMAIL_CONSENT": "recommendations.push.consent.stored_email_consent",
    "EMAIL_ADDRESS": "recommendations.push.consent.user_email",
    "EMAIL_FROM": None,
    "EMAIL_MIN_HOURS_BETWEEN": 16,
    "EMAIL_BATCH_SIZE": 200,
    "EMAIL_CLICK_MAX_AGE_DAYS": 60,
    "EMAIL_UNSUBSCRIBE_MAX_AGE_DAYS": 365,
    "EMAIL_UNSUBSCRIBE_MAILTO": "",
    "EMAIL_QUIET_HOURS": (21, 8),
    "EMAIL_TIME_ZONE": None,
    "EMAIL_LANGUAGE": None,
    "EMAIL_BEST_HOUR_DAYS": 30,
    "EMAIL_BEST_HOUR_MIN_EVENTS": 10,
}

PRODUCT_FIELD_KEYS = ("name", "category", "brand", "price", "in_stock", "text", "created_at", "active")


class RecommendationSettings:
    """Attribute access to RECOMMENDATIONS with defaults filled in, read afresh on every access."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown RECOMMENDATIONS setting: {name}")
        user = getattr(django_settings, "RECOMMENDATIONS", {}) or {}
        value = user.get(name, DEFAULTS[name])
        if isinstance(DEFAULTS[name], dict) and name in user and name in {"EVENT_WEIGHTS", "TITLES", "NEURAL"}:
            # Partial overrides of these dicts keep the other defaults.
            return {**DEFAULTS[name], **value}
        if name == "PLACEMENTS" and name in user:
            # Per placement and per key: a shop overrides one field of one placement, or adds a placement.
            merged = {key: dict(config) for key, config in DEFAULTS[name].items()}
            for key, config in value.items():
                merged[key] = {**merged.get(key, {}), **config}
            return merged
        return value


rec_settings = RecommendationSettings()


def event_weights() -> dict[str, float]:
    """EVENT_WEIGHTS as floats: what training, precompute and refresh weigh each event type by (read per call, so a
    test's override_settings reaches them)."""
    return {name: float(weight) for name, weight in rec_settings.EVENT_WEIGHTS.items()}


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Catch misspelt keys and inconsistent values at startup, not at the first recommendation."""
    errors: list[Error] = []
    user = getattr(django_settings, "RECOMMENDATIONS", None)
    if user is None:
        return [
            Error("RECOMMENDATIONS setting is missing.", hint="Name at least PRODUCT_MODEL.", id="recommendations.E001")
        ]
    if not isinstance(user, dict):
        return [Error("RECOMMENDATIONS must be a dict.", id="recommendations.E001")]
    for key in sorted(set(user) - set(DEFAULTS)):
        errors.append(Error(f"Unknown RECOMMENDATIONS key {key!r}.", id="recommendations.E002"))
    model = user.get("PRODUCT_MODEL")
    if not model or not isinstance(model, str) or model.count(".") != 1:
        errors.append(
            Error("RECOMMENDATIONS['PRODUCT_MODEL'] must be 'app_label.ModelName'.", id="recommendations.E003")
        )
    else:
        from django.apps import apps

        try:
            apps.get_model(model)
        except (LookupError, ValueError):
            errors.append(
                Error(
                    f"RECOMMENDATIONS['PRODUCT_MODEL'] {model!r} is not an installed model.", id="recommendations.E003"
                )
            )
    fields = user.get("PRODUCT_FIELDS", {})
    if not isinstance(fields, dict):
        errors.append(Error("RECOMMENDATIONS['PRODUCT_FIELDS'] must be a dict.", id="recommendations.E004"))
    else:
        for key in sorted(set(fields) - set(PRODUCT_FIELD_KEYS)):
            errors.append(
                Error(
                    f"Unknown PRODUCT_FIELDS key {key!r}.",
                    hint=f"Known keys: {', '.join(PRODUCT_FIELD_KEYS)}.",
                    id="recommendations.E004",
                )
            )
    weights = {**DEFAULTS["EVENT_WEIGHTS"], **user.get("EVENT_WEIGHTS", {})}
    for event_type, weight in weights.items():
        if event_type not in EVENT_TYPES:
            errors.append(Error(f"EVENT_WEIGHTS names unknown event type {event_type!r}.", id="recommendations.E005"))
        elif not isinstance(weight, int | float) or weight < 0:
            errors.append(Error(f"EVENT_WEIGHTS[{event_type!r}] must be a number >= 0.", id="recommendations.E005"))
    for key in (
        "RECENCY_HALF_LIFE_DAYS",
        "TRENDING_WINDOW_DAYS",
        "TRENDING_HALF_LIFE_DAYS",
        "REFRESH_DEBOUNCE_SECONDS",
        "SESSION_MINUTES",
        "CART_DAYS",
        "ATTRIBUTION_HOURS",
        "SERVING_BUDGET_MS",
        "BURST_SECONDS",
        "BOT_MAX_EVENTS_PER_MINUTE",
        "EVENT_MAX_AGE_DAYS",
    ):
        value = user.get(key, DEFAULTS[key])
        if not isinstance(value, int | float) or value <= 0:
            errors.append(Error(f"RECOMMENDATIONS[{key!r}] must be a number > 0.", id="recommendations.E006"))
    for key in ("VALIDATION_FRACTION", "TEST_FRACTION"):
        value = user.get(key, DEFAULTS[key])
        if not isinstance(value, int | float) or not 0 < value < 0.5:
            errors.append(Error(f"RECOMMENDATIONS[{key!r}] must be a fraction in (0, 0.5).", id="recommendations.E007"))
    split = user.get("SPLIT", DEFAULTS["SPLIT"])
    if split not in ("auto", "global", "per_shopper"):
        errors.append(
            Error("RECOMMENDATIONS['SPLIT'] must be 'auto', 'global' or 'per_shopper'.", id="recommendations.E007")
        )
    candidates = user.get("CANDIDATES", DEFAULTS["CANDIDATES"])
    from recommendations.engine.candidates import CANDIDATE_SPECS

    if not isinstance(candidates, list | tuple) or not candidates:
        errors.append(Error("RECOMMENDATIONS['CANDIDATES'] must be a non-empty list.", id="recommendations.E007"))
    else:
        for name in candidates:
            if name not in CANDIDATE_SPECS:
                errors.append(
                    Error(
                        f"Unknown candidate {name!r} in RECOMMENDATIONS['CANDIDATES'].",
                        hint=f"Known: {', '.join(sorted(CANDIDATE_SPECS))}.",
                        id="recommendations.E007",
                    )
                )
    for key in (
        "TOP_N",
        "SIMILAR_N",
        "BLOCK_SIZE",
        "INGEST_MAX_EVENTS",
        "INGEST_MAX_BYTES",
        "EASE_MAX_ITEMS",
        "MAX_EVAL_SHOPPERS",
        "KEEP_MODELS",
        "PRECOMPUTE_SHARDS",
    ):
        value = user.get(key, DEFAULTS[key])
        if not isinstance(value, int) or value <= 0:
            errors.append(Error(f"RECOMMENDATIONS[{key!r}] must be a positive integer.", id="recommendations.E006"))
    pseudonym_key = user.get("PSEUDONYM_KEY", DEFAULTS["PSEUDONYM_KEY"])
    if pseudonym_key is not None and (not isinstance(pseudonym_key, str) or len(pseudonym_key) < 16):
        errors.append(
            Error(
                "RECOMMENDATIONS['PSEUDONYM_KEY'] must be None (use SECRET_KEY) or a secret of 16 characters or more.",
                id="recommendations.E006",
            )
        )
    for key in ("EVENT_RETENTION_DAYS", "IMPRESSION_RETENTION_DAYS"):
        value = user.get(key, DEFAULTS[key])
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            errors.append(
                Error(
                    f"RECOMMENDATIONS[{key!r}] must be None (keep every event) or a number of days > 0.",
                    id="recommendations.E006",
                )
            )
    budget = user.get("RETRAIN_SECONDS", DEFAULTS["RETRAIN_SECONDS"])
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0):
        errors.append(
            Error(
                "RECOMMENDATIONS['RETRAIN_SECONDS'] must be None (no budget for the whole retrain) or seconds > 0.",
                id="recommendations.E006",
            )
        )
    errors += _check_consent(user)
    errors += _check_purchase_settings(user)
    errors.extend(_check_serving(user))
    errors.extend(_check_tasks_and_rates(user))
    errors.extend(_check_health(user))
    errors.extend(_check_run_liveness(user))
    errors.extend(_check_email(user))
    return errors


def _check_email(user: dict[str, Any]) -> list[Error]:
    """The push e-mail settings: a link to a wrong site, or a consent check that cannot be imported, would go out in
    every e-mail (a failing consent check sends nothing, push.consent)."""
    errors: list[Error] = []
    site = user.get("SITE_URL", DEFAULTS["SITE_URL"])
    if not isinstance(site, str) or (site and not site.startswith(("http://", "https://"))):
        errors.append(
            Error(
                "RECOMMENDATIONS['SITE_URL'] must be \"\" or the site's root URL, starting with https:// or http://.",
                id="recommendations.E015",
            )
        )
    for key in ("EMAIL_CONSENT", "EMAIL_ADDRESS"):
        path = user.get(key, DEFAULTS[key])
        if not _names_callable(path):
            errors.append(
                Error(
                    f"RECOMMENDATIONS[{key!r}] {path!r} is not a dotted path to a callable taking the user.",
                    id="recommendations.E015",
                )
            )
    for key in ("EMAIL_MIN_HOURS_BETWEEN", "EMAIL_CLICK_MAX_AGE_DAYS", "EMAIL_UNSUBSCRIBE_MAX_AGE_DAYS"):
        value = user.get(key, DEFAULTS[key])
        low = 0 if key == "EMAIL_MIN_HOURS_BETWEEN" else 1
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            errors.append(Error(f"RECOMMENDATIONS[{key!r}] must be a number >= {low}.", id="recommendations.E015"))
    batch = user.get("EMAIL_BATCH_SIZE", DEFAULTS["EMAIL_BATCH_SIZE"])
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        errors.append(Error("RECOMMENDATIONS['EMAIL_BATCH_SIZE'] must be an integer >= 1.", id="recommendations.E015"))
    for key in ("EMAIL_FROM", "EMAIL_UNSUBSCRIBE_MAILTO"):
        value = user.get(key, DEFAULTS[key])
        if value is not None and not isinstance(value, str):
            errors.append(Error(f"RECOMMENDATIONS[{key!r}] must be an e-mail address.", id="recommendations.E015"))
    return errors + _check_email_timing(user)


def _names_callable(path: Any) -> bool:
    """A callable, or a dotted path that imports one (a host's hook taking the user)."""
    if callable(path):
        return True
    from django.utils.module_loading import import_string

    try:
        return isinstance(path, str) and callable(import_string(path))
    except ImportError:
        return False


def _check_email_timing(user: dict[str, Any]) -> list[Error]:
    """Quiet hours, the zone and language callables, the best hour's numbers: a wrong one would hold or garble every
    e-mail of every flow."""
    errors: list[Error] = []
    quiet = user.get("EMAIL_QUIET_HOURS", DEFAULTS["EMAIL_QUIET_HOURS"])
    if quiet is not None and not (
        isinstance(quiet, list | tuple)
        and len(quiet) == 2
        and all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 23 for h in quiet)
    ):
        errors.append(
            Error(
                "RECOMMENDATIONS['EMAIL_QUIET_HOURS'] must be None or (start, end), two hours from 0 to 23.",
                id="recommendations.E015",
            )
        )
    for key in ("EMAIL_TIME_ZONE", "EMAIL_LANGUAGE"):
        path = user.get(key, DEFAULTS[key])
        if path is not None and not _names_callable(path):
            errors.append(
                Error(
                    f"RECOMMENDATIONS[{key!r}] {path!r} is not None or a dotted path to a callable taking the user.",
                    id="recommendations.E015",
                )
            )
    for key in ("EMAIL_BEST_HOUR_DAYS", "EMAIL_BEST_HOUR_MIN_EVENTS"):
        value = user.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(Error(f"RECOMMENDATIONS[{key!r}] must be an integer >= 1.", id="recommendations.E015"))
    return errors


def _check_run_liveness(user: dict[str, Any]) -> list[Error]:
    """A stale time within two heartbeats would take over runs that are alive (one slow UPDATE would do it)."""
    heartbeat = user.get("RUN_HEARTBEAT_SECONDS", DEFAULTS["RUN_HEARTBEAT_SECONDS"])
    stale = user.get("RUN_STALE_SECONDS", DEFAULTS["RUN_STALE_SECONDS"])
    attempts = user.get("RUN_MAX_ATTEMPTS", DEFAULTS["RUN_MAX_ATTEMPTS"])
    errors: list[Error] = []
    numbers = [v for v in (heartbeat, stale) if not isinstance(v, bool) and isinstance(v, int | float) and v > 0]
    if len(numbers) < 2:
        errors.append(
            Error(
                "RECOMMENDATIONS['RUN_HEARTBEAT_SECONDS'] and ['RUN_STALE_SECONDS'] must be numbers > 0.",
                id="recommendations.E014",
            )
        )
    elif stale < 3 * heartbeat:
        errors.append(
            Error(
                "RECOMMENDATIONS['RUN_STALE_SECONDS'] must be at least three times RUN_HEARTBEAT_SECONDS.",
                hint="Otherwise a run that is alive but slow to write one heartbeat is taken over.",
                id="recommendations.E014",
            )
        )
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        errors.append(Error("RECOMMENDATIONS['RUN_MAX_ATTEMPTS'] must be an integer >= 1.", id="recommendations.E014"))
    return errors


def _check_health(user: dict[str, Any]) -> list[Error]:
    """The health thresholds and the metrics token: a typo would make the checks fail or the metrics open to all."""
    errors: list[Error] = []
    for key in ("HEALTH_MAX_MODEL_AGE_HOURS", "HEALTH_MAX_LIST_AGE_HOURS"):
        value = user.get(key, DEFAULTS[key])
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            errors.append(
                Error(f"RECOMMENDATIONS[{key!r}] must be None (not checked) or hours > 0.", id="recommendations.E013")
            )
    timeout = user.get("HEALTH_TIMEOUT_SECONDS", DEFAULTS["HEALTH_TIMEOUT_SECONDS"])
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 30:
        errors.append(
            Error("RECOMMENDATIONS['HEALTH_TIMEOUT_SECONDS'] must be seconds in (0, 30].", id="recommendations.E013")
        )
    token = user.get("METRICS_TOKEN", DEFAULTS["METRICS_TOKEN"])
    if not isinstance(token, str) or (token and len(token) < 16):
        errors.append(
            Error(
                "RECOMMENDATIONS['METRICS_TOKEN'] must be \"\" (staff only) or a secret of 16 characters or more.",
                id="recommendations.E013",
            )
        )
    return errors


def _check_consent(user: dict[str, Any]) -> list[Error]:
    """A consent check that cannot be imported would leave every shopper untracked (a failing check says no)."""
    errors: list[Error] = []
    path = user.get("CONSENT_CHECK", DEFAULTS["CONSENT_CHECK"])
    if not callable(path):
        from django.utils.module_loading import import_string

        try:
            found = import_string(path) if isinstance(path, str) else None
        except ImportError as exc:
            found = None
            problem = str(exc)
        else:
            problem = "it is not callable"
        if not callable(found):
            errors.append(
                Error(
                    f"RECOMMENDATIONS['CONSENT_CHECK'] {path!r} cannot be used: {problem}.",
                    hint="A dotted path to a callable taking the request and returning True or False.",
                    id="recommendations.E012",
                )
            )
    for key in ("CONSENT_REQUIRED", "ERASE_ON_OPT_OUT"):
        if not isinstance(user.get(key, DEFAULTS[key]), bool):
            errors.append(Error(f"RECOMMENDATIONS[{key!r}] must be True or False.", id="recommendations.E012"))
    name = user.get("CONSENT_COOKIE_NAME", DEFAULTS["CONSENT_COOKIE_NAME"])
    if (
        not isinstance(name, str)
        or not name
        or name == user.get("VISITOR_COOKIE_NAME", DEFAULTS["VISITOR_COOKIE_NAME"])
    ):
        errors.append(
            Error(
                "RECOMMENDATIONS['CONSENT_COOKIE_NAME'] must be a cookie name other than VISITOR_COOKIE_NAME.",
                id="recommendations.E012",
            )
        )
    return errors


def _check_tasks_and_rates(user: dict[str, Any]) -> list[Error]:
    """TASKS and the shape of THROTTLE_RATES (api/throttling.py checks each rate): a typo is caught at start-up."""
    errors: list[Error] = []
    if user.get("TASKS", DEFAULTS["TASKS"]) not in ("auto", "celery", "inline"):
        errors.append(
            Error("RECOMMENDATIONS['TASKS'] must be 'auto', 'celery' or 'inline'.", id="recommendations.E007")
        )
    if not isinstance(user.get("THROTTLE_RATES", {}), dict):
        errors.append(Error("RECOMMENDATIONS['THROTTLE_RATES'] must be a dict.", id="recommendations.E007"))
    return errors


def _check_purchase_settings(user: dict[str, Any]) -> list[Error]:
    """The engine.purchases settings: a bad value would make a list silently empty or meaningless."""
    rules = (
        ("PURCHASE_WINDOW_MINUTES", lambda v: isinstance(v, int | float) and v > 0, "a number > 0", "E006"),
        ("BOUGHT_TOGETHER_MIN_ORDERS", lambda v: isinstance(v, int) and v > 0, "a positive integer", "E006"),
        ("BUY_AGAIN_SHRINKAGE", lambda v: isinstance(v, int | float) and v >= 0, "a number >= 0", "E006"),
        ("BOUGHT_TOGETHER_ALPHA", lambda v: isinstance(v, int | float) and 0 <= v <= 1, "a number in [0, 1]", "E007"),
        ("BUY_AGAIN_MIN_SCORE", lambda v: isinstance(v, int | float) and 0 <= v <= 1, "a number in [0, 1]", "E007"),
    )
    return [
        Error(f"RECOMMENDATIONS[{key!r}] must be {what}.", id=f"recommendations.{code}")
        for key, valid, what, code in rules
        if not valid(user.get(key, DEFAULTS[key]))
    ]


FALLBACK_STEPS = ("rules", "similar", "trending_category", "trending", "popular")
PLACEMENT_INT_KEYS = ("size", "max_per_category", "max_per_brand", "min_size")


def _check_serving(user: dict[str, Any]) -> list[Error]:
    errors: list[Error] = []
    weight = user.get("SESSION_WEIGHT", DEFAULTS["SESSION_WEIGHT"])
    if not isinstance(weight, int | float) or not 0 <= weight <= 1:
        errors.append(Error("RECOMMENDATIONS['SESSION_WEIGHT'] must be a number in [0, 1].", id="recommendations.E008"))
    seconds = user.get("BLOCK_CACHE_SECONDS", DEFAULTS["BLOCK_CACHE_SECONDS"])
    if not isinstance(seconds, int) or seconds < 0:
        errors.append(
            Error("RECOMMENDATIONS['BLOCK_CACHE_SECONDS'] must be an integer >= 0.", id="recommendations.E008")
        )
    placements = user.get("PLACEMENTS", {})
    if not isinstance(placements, dict):
        return [*errors, Error("RECOMMENDATIONS['PLACEMENTS'] must be a dict.", id="recommendations.E008")]
    known = set(DEFAULTS["PLACEMENTS"])
    for name, config in placements.items():
        where = f"RECOMMENDATIONS['PLACEMENTS'][{name!r}]"
        if not isinstance(config, dict):
            errors.append(Error(f"{where} must be a dict.", id="recommendations.E008"))
            continue
        if name not in known:
            errors.append(
                Error(
                    f"{where}: unknown placement.",
                    hint=f"Known: {', '.join(sorted(known))}; a new surface needs a source in serving.sources.SOURCES.",
                    id="recommendations.E008",
                )
            )
        for key in sorted(set(config) - {"title", "allow_bought", "fallback", *PLACEMENT_INT_KEYS}):
            errors.append(Error(f"{where}: unknown key {key!r}.", id="recommendations.E008"))
        for key in PLACEMENT_INT_KEYS:
            value = config.get(key, 0 if key != "size" else 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "size" else 0):
                errors.append(
                    Error(
                        f"{where}[{key!r}] must be an integer >= {1 if key == 'size' else 0}.",
                        id="recommendations.E008",
                    )
                )
        fallback = config.get("fallback", [])
        if not isinstance(fallback, list | tuple) or any(step not in FALLBACK_STEPS for step in fallback):
            errors.append(
                Error(
                    f"{where}['fallback'] must list steps from {', '.join(FALLBACK_STEPS)}.", id="recommendations.E008"
                )
            )
    return errors
