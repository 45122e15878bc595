"""Cold-start and merchandising rules as serving reads them, and the new-product exploration pool.

Reads are cached for everyone (one cache key per kind of rule) and the keys are deleted whenever a row is saved or
deleted (the receivers in `tunables.snapshot`), so a rule takes effect on the next page, as django-waffle does it.
Rule windows are checked at read time, so a rule that starts at nine starts at nine without a cache flush.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Sum
from django.utils import timezone

from recommendations import keys
from recommendations.engine import reasons
from recommendations.lists import store
from recommendations.models import (
    ColdStartRule,
    Event,
    MerchandisingRule,
    ProductProfile,
)
from recommendations.tracking.identity import CAMPAIGN_COOKIE, CAMPAIGN_PATTERN
from recommendations.tunables.placements import CACHE_TTL

logger = logging.getLogger(__name__)


COLD_START_KEY = keys.RULES_COLD_START


MERCHANDISING_KEY = keys.RULES_MERCHANDISING


SOURCE_TTL = 60  # a rule's product list (top sellers, newest, ...) is shared by every shopper it matches


Candidate = tuple[str, float, str, str]  # (product id, score, reason code, source): what every source offers serving


@dataclass
class Audience:
    """What cold-start rules may ask about the shopper in front of them."""

    shopper: str = ""
    n_events: int = 0
    n_purchases: int = 0
    category: str = ""  # the page's category (a category page, or a product page's category)
    campaign: str = ""
    _account_age_days: float | None = field(default=None, repr=False)

    @property
    def anonymous(self) -> bool:
        return not self.shopper.startswith("u:")

    def account_age_days(self) -> float | None:
        """Days since the account was created (None for visitors or a user model without date_joined)."""
        if self._account_age_days is None and not self.anonymous:
            from django.contrib.auth import get_user_model

            model = get_user_model()
            try:
                joined = model.objects.filter(pk=self.shopper[2:]).values_list("date_joined", flat=True).first()
            except Exception:  # a user model without date_joined, or a key that is not a pk
                joined = None
            self._account_age_days = (timezone.now() - joined).total_seconds() / 86_400 if joined else -1.0
        age = self._account_age_days
        return None if age is None or age < 0 else age


def campaign_of(request: Any) -> str:
    """The campaign this visit arrived from: utm_campaign on this URL, else the one remembered for the visit."""
    if request is None:
        return ""
    value = request.GET.get("utm_campaign", "") or request.COOKIES.get(CAMPAIGN_COOKIE, "")
    return value if CAMPAIGN_PATTERN.match(value or "") else ""


def _matches(rule: dict[str, Any], audience: Audience) -> bool:
    kind, number, value = rule["audience"], rule["audience_number"], rule["audience_value"]
    if kind == ColdStartRule.Audience.EVERYONE:
        return True
    if kind == ColdStartRule.Audience.ANONYMOUS:
        return audience.anonymous
    if kind == ColdStartRule.Audience.FEW_EVENTS:
        return audience.n_events < (number or 0)
    if kind == ColdStartRule.Audience.NO_PURCHASES:
        return audience.n_purchases == 0
    if kind == ColdStartRule.Audience.CATEGORY:
        return bool(value) and audience.category == value
    if kind == ColdStartRule.Audience.CAMPAIGN:
        return bool(value) and audience.campaign == value
    if kind == ColdStartRule.Audience.NEW_ACCOUNT:
        age = audience.account_age_days()
        return age is not None and age < (number or 0)
    return False


def _live(rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if (r["starts_at"] is None or r["starts_at"] <= now) and (r["ends_at"] is None or r["ends_at"] > now)
    ]


def _for_placement(rows: list[dict[str, Any]], placement: str) -> list[dict[str, Any]]:
    return [r for r in rows if not r["placements"] or placement in r["placements"]]


def cold_start_rows() -> list[dict[str, Any]]:
    rows = cache.get(COLD_START_KEY)
    if rows is None:
        rows = list(ColdStartRule.objects.filter(active=True).order_by("-priority", "pk").values())
        cache.set(COLD_START_KEY, rows, CACHE_TTL)
    return rows


def matching_rule(placement: str, audience: Audience, now: datetime | None = None) -> dict[str, Any] | None:
    """The highest-priority live cold-start rule for this placement and shopper, or None."""
    return matching_rule_in(cold_start_rows(), placement, audience, now)


def rule_candidates(rule: dict[str, Any], category: str, limit: int) -> list[Candidate]:
    """What a cold-start rule yields, best first; reason codes name the rule so staff can tell it in a preview."""
    source, reason = rule["source"], reasons.code(reasons.RULE, rule["id"])
    key = _source_key(rule, category, limit)
    rows = cache.get(key)
    if rows is None:
        rows = _source_rows(rule, category, limit)
        cache.set(key, rows, SOURCE_TTL)
    if source in (ColdStartRule.Source.TRENDING, ColdStartRule.Source.TRENDING_CATEGORY):
        scope = rule["source_value"] or category
        reason = reasons.code(reasons.TRENDING, scope if source == ColdStartRule.Source.TRENDING_CATEGORY else "")
    elif source == ColdStartRule.Source.NEWEST:
        reason = reasons.NEW
    elif source == ColdStartRule.Source.TOP_SELLERS:
        reason = reasons.POPULAR
    return [(pid, score, reason, reasons.code(reasons.RULE, rule["id"])) for pid, score in rows]


def _source_key(rule: dict[str, Any], category: str, limit: int) -> str:
    raw = f"{rule['id']}|{rule['updated_at']}|{category}|{limit}"
    return keys.RULES_SOURCE + hashlib.sha256(raw.encode()).hexdigest()[:32]


def _servable() -> Any:
    return ProductProfile.objects.filter(active=True, in_stock=True)


def _source_rows(rule: dict[str, Any], category: str, limit: int) -> list[tuple[str, float]]:
    source, value, days = rule["source"], rule["source_value"], rule["source_days"]
    if source == ColdStartRule.Source.TRENDING:
        return [(str(r[0]), float(r[1])) for r in store.shared_items("trending")][: limit * 2]
    if source == ColdStartRule.Source.TRENDING_CATEGORY:
        scope = value or category
        if not scope:
            return []
        rows = store.shared_items("trending", f"category:{scope}")
        if rows:
            return [(str(r[0]), float(r[1])) for r in rows][: limit * 2]
        ranked = _servable().filter(category=scope).order_by("-sales_count", "-created_at", "product_id")
        return [(pid, float(n)) for pid, n in ranked.values_list("product_id", "sales_count")[: limit * 2]]
    if source == ColdStartRule.Source.TOP_SELLERS:
        since = timezone.now() - timedelta(days=days or 30)
        sold = (
            Event.objects.filter(event_type="purchase", occurred_at__gte=since)
            .exclude(product_id="")
            .values("product_id")
            .annotate(units=Sum("quantity"), orders=Count("id"))
            .order_by("-units", "-orders", "product_id")[: limit * 4]
        )
        ids = [row["product_id"] for row in sold]
        servable = set(_servable().filter(product_id__in=ids).values_list("product_id", flat=True))
        return [(row["product_id"], float(row["units"] or 0)) for row in sold if row["product_id"] in servable]
    if source == ColdStartRule.Source.NEWEST:
        qs = _servable().exclude(created_at__isnull=True)
        if days:
            qs = qs.filter(created_at__gte=timezone.now() - timedelta(days=days))
        newest = qs.order_by("-created_at", "product_id").values_list("product_id", "created_at")[: limit * 2]
        return [(pid, float(created.timestamp())) for pid, created in newest]
    if source == ColdStartRule.Source.HAND_PICKED:
        picked = [str(p) for p in rule["products"] or []]
        servable = set(_servable().filter(product_id__in=picked).values_list("product_id", flat=True))
        n = len(picked)
        return [(pid, float(n - rank)) for rank, pid in enumerate(picked) if pid in servable]
    if source == ColdStartRule.Source.BRAND:
        ranked = _servable().filter(brand=value).order_by("-sales_count", "-created_at", "product_id")
        return [(pid, float(n)) for pid, n in ranked.values_list("product_id", "sales_count")[: limit * 2]]
    if source == ColdStartRule.Source.PRICE_BAND:
        qs = _servable()
        if rule["price_min"] is not None:
            qs = qs.filter(price__gte=rule["price_min"])
        if rule["price_max"] is not None:
            qs = qs.filter(price__lte=rule["price_max"])
        ranked = qs.order_by("-sales_count", "-created_at", "product_id")
        return [(pid, float(n)) for pid, n in ranked.values_list("product_id", "sales_count")[: limit * 2]]
    logger.warning("cold-start rule %s has an unknown source %r", rule["id"], source)
    return []


def merchandising_rows() -> list[dict[str, Any]]:
    rows = cache.get(MERCHANDISING_KEY)
    if rows is None:
        rows = list(MerchandisingRule.objects.filter(active=True).order_by("priority", "pk").values())
        cache.set(MERCHANDISING_KEY, rows, CACHE_TTL)
    return rows


def live_merchandising(placement: str, now: datetime | None = None) -> list[dict[str, Any]]:
    return merchandising_in(merchandising_rows(), placement, now)


def _hits(rule: dict[str, Any], profile: store.Profile | None, product_id: str) -> bool:
    """Does the rule's target cover this product (its profile, or None when it has none)?"""
    target, value = rule["target"], rule["target_value"]
    if target == MerchandisingRule.Target.PRODUCT:
        return product_id == value
    if profile is None:
        return False
    if target == MerchandisingRule.Target.CATEGORY:
        return profile.category == value
    if target == MerchandisingRule.Target.BRAND:
        return profile.brand == value
    if target == MerchandisingRule.Target.PRICE_BAND:
        price = profile.price
        if price is None:
            return False
        price = Decimal(str(price))
        low, high = rule["price_min"], rule["price_max"]
        return (low is None or price >= low) and (high is None or price <= high)
    return False


def apply_merchandising(
    candidates: list[Candidate], rules: list[dict[str, Any]], profiles: dict[str, store.Profile]
) -> tuple[list[Candidate], dict[int, str], dict[str, list[str]]]:
    """Exclude, boost and bury by score; returns (candidates, pins {position: product id}, notes per product).

    Boost and bury multiply and divide a rank-based score (so they work the same whatever scale the model's scores
    have); pins are placed by the picker after filtering, at their 1-based position. `notes` lists the rules that
    touched a product, for its reason.
    """
    if not rules:  # no candidates is no reason to stop: a product pin holds in a block the fallback fills alone
        return candidates, {}, {}
    n = len(candidates)
    scored = {c[0]: [float(n - rank), c] for rank, c in enumerate(candidates)}
    notes: dict[str, list[str]] = {}
    pins: dict[int, str] = {}
    for rule in rules:
        action = rule["action"]
        if action == MerchandisingRule.Action.PIN and rule["target"] == MerchandisingRule.Target.PRODUCT:
            if rule["position"]:
                pins[int(rule["position"])] = rule["target_value"]
                notes.setdefault(rule["target_value"], []).append(rule["name"])
            continue
        for pid in list(scored):
            if not _hits(rule, profiles.get(pid), pid):
                continue
            notes.setdefault(pid, []).append(rule["name"])
            if action == MerchandisingRule.Action.EXCLUDE:
                del scored[pid]
            elif action == MerchandisingRule.Action.BOOST:
                scored[pid][0] *= max(float(rule["strength"]), 1.0)
            elif action == MerchandisingRule.Action.BURY:
                scored[pid][0] /= max(float(rule["strength"]), 1.0)
            elif action == MerchandisingRule.Action.PIN and rule["position"]:
                pins.setdefault(int(rule["position"]), pid)  # the best-ranked product of the target takes the pin
    ranked = sorted(scored.values(), key=lambda entry: -entry[0])
    return [entry[1] for entry in ranked], pins, notes


def excluded_by(rules: list[dict[str, Any]], profile: store.Profile | None, product_id: str) -> bool:
    """Whether an exclude rule covers a product (fallback items are excluded too, not only the model's)."""
    return any(r["action"] == MerchandisingRule.Action.EXCLUDE and _hits(r, profile, product_id) for r in rules)


def exploration_pool(max_age_days: int, limit: int = 200) -> list[str]:
    """Young products nobody has interacted with yet, newest first (shared, cached briefly)."""
    key = keys.rules_explore(max_age_days, limit)
    pool = cache.get(key)
    if pool is None:
        since = timezone.now() - timedelta(days=max_age_days)
        young = list(
            _servable()
            .filter(created_at__gte=since)
            .order_by("-created_at", "product_id")
            .values_list("product_id", flat=True)[: limit * 2]
        )
        touched = set(
            Event.objects.filter(product_id__in=young)
            .exclude(event_type__in=("impression", "search"))
            .values_list("product_id", flat=True)
            .distinct()
        )
        pool = [pid for pid in young if pid not in touched][:limit]
        cache.set(key, pool, SOURCE_TTL)
    return pool


def exploration_slots(size: int, share: float) -> list[int]:
    """0-based positions given to exploration in a block of `size`: spread out, never the first."""
    count = round(size * max(0.0, min(share, 0.5)))
    if count <= 0 or size < 2:
        return []
    step = size / count
    return sorted({min(size - 1, max(1, int(step * (i + 1)) - 1)) for i in range(count)})


def rotate(pool: list[str], shopper: str, count: int) -> list[str]:
    """`count` products from the pool, a different rotation per shopper and day, so all of them gather feedback."""
    if not pool or count <= 0:
        return []
    seed = hashlib.sha256(f"{shopper}|{timezone.now().date()}".encode()).digest()
    start = int.from_bytes(seed[:4], "big") % len(pool)
    return [pool[(start + i) % len(pool)] for i in range(min(count, len(pool)))]


def matching_rule_in(
    rows: list[dict[str, Any]], placement: str, audience: Audience, now: datetime | None = None
) -> dict[str, Any] | None:
    for rule in _for_placement(_live(rows, now or timezone.now()), placement):
        if _matches(rule, audience):
            return rule
    return None


def merchandising_in(rows: list[dict[str, Any]], placement: str, now: datetime | None = None) -> list[dict[str, Any]]:
    return _for_placement(_live(rows, now or timezone.now()), placement)
