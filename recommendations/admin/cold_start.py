"""Cold-start rules: who sees what, where and when, for shoppers the model cannot serve yet, and their preview.

The form refuses what serving would silently ignore (a hand-picked product the catalog does not have, a campaign name
that can never match, a window that ends before it starts), and every change records its author in `updated_by`
besides Django's own history (LogEntry).

A rule's change page lists the products the rule yields right now; its *Preview* button re-renders the form with what
the edited, unsaved values would yield (the form validates, then answers "not valid" to the admin so it renders
instead of saving). It POSTs, so it takes the change (or add) permission like saving does. Read-only, like the
placement preview (admin/preview.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations import serving, tracking, tunables
from recommendations.admin.rule_forms import (
    PlacementsField,
    RuleAdmin,
    check_price_band,
    check_window,
    known,
    price_band,
    rule_status_text,
)
from recommendations.models import (
    ColdStartRule,
    ProductProfile,
)

logger = logging.getLogger(__name__)


PREVIEW_BUTTON = "_preview"  # the rule form's "Preview" submit button: validate and show, never save
PREVIEW_CATEGORY = "_preview_category"  # the page category a preview assumes (trending in a category needs one)
PRODUCT_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass
class RulePreview:
    """What a cold-start rule yields now, as listed on its page."""

    saved: bool  # the saved rule (True) or the form's unsaved values (False)
    limit: int
    category: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # products the rule names that cannot be shown now
    note: str = ""


def _preview_limit(placements: list[str]) -> int:
    names = placements or serving.placement_names()
    return max((serving.placement_config(n).size for n in names if n in serving.placement_names()), default=8)


def preview_rule(values: dict[str, Any], category: str = "", saved: bool = False) -> RulePreview:
    """The products a rule gives now (through `tunables.rule_candidates`, as serving calls it), with names and prices.

    `values` are the rule's fields as `.values()` reads them. An unsaved rule gets an `updated_at` made of a hash of its
    values, so its products are cached under a key of their own: the saved rule's cached list (what serving reads) is
    neither read nor replaced by a preview.
    """
    limit = _preview_limit(list(values.get("placements") or []))
    preview = RulePreview(saved=saved, limit=limit, category=category)
    if values.get("source") == ColdStartRule.Source.TRENDING_CATEGORY and not (values.get("source_value") or category):
        preview.note = _("Trending in the page's category: give a category to preview it for a page of that category.")
        return preview
    candidates = tunables.rule_candidates(values, category, limit)
    ids = [c[0] for c in candidates]
    picked = [str(p) for p in values.get("products") or []] if values.get("source") == "hand_picked" else []
    profiles = {
        p["product_id"]: p
        for p in ProductProfile.objects.filter(product_id__in=[*ids, *picked]).values(
            "product_id", "name", "category", "brand", "price", "active", "in_stock"
        )
    }
    names = {pid: p["name"] for pid, p in profiles.items()}
    for pid, _score, reason, _source in candidates:
        profile = profiles.get(pid)
        if profile is None or not (profile["active"] and profile["in_stock"]):
            continue  # serving's filters drop it too
        if len(preview.rows) >= limit:
            break
        preview.rows.append(
            {
                "rank": len(preview.rows) + 1,
                "product_id": pid,
                "name": profile["name"],
                "category": profile["category"],
                "brand": profile["brand"],
                "price": profile["price"],
                "reason_text": serving.reason_text(reason, names),
            }
        )
    for pid in picked:
        profile = profiles.get(pid)
        if profile is not None and not (profile["active"] and profile["in_stock"]):
            state = _("inactive") if not profile["active"] else _("out of stock")
            preview.left_out.append(f"{profile['name'] or pid} ({pid}): {state}")
    if not preview.rows and not preview.note:
        preview.note = _("The rule yields no product right now; the block goes on to its next fallback step.")
    return preview


def _unsaved_values(rule: ColdStartRule) -> dict[str, Any]:
    values = {f.attname: getattr(rule, f.attname) for f in ColdStartRule._meta.concrete_fields}
    digest = hashlib.sha256(repr(sorted(values.items(), key=lambda kv: kv[0])).encode()).hexdigest()[:16]
    values["updated_at"] = f"preview:{digest}"
    return values


def _no_category(slug: str) -> str:
    return _("No product is in the category “%(category)s”.") % {"category": slug}


class ColdStartRuleForm(forms.ModelForm):
    placements = PlacementsField()
    products = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        help_text=gettext_lazy(
            "For hand-picked products: product ids in order, one per line or separated by commas. "
            "Preview lists their names."
        ),
    )

    class Meta:
        model = ColdStartRule
        fields = (
            "name",
            "active",
            "priority",
            "placements",
            "audience",
            "audience_number",
            "audience_value",
            "source",
            "source_value",
            "source_days",
            "price_min",
            "price_max",
            "products",
            "starts_at",
            "ends_at",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preview: RulePreview | None = None
        if "products" in self.fields and isinstance(self.initial.get("products"), list):
            self.initial["products"] = "\n".join(str(p) for p in self.initial["products"])

    def clean_products(self) -> list[str]:
        raw = self.cleaned_data.get("products") or ""
        ids = list(dict.fromkeys(p for p in PRODUCT_SEPARATORS.split(raw) if p))
        known = set(ProductProfile.objects.filter(product_id__in=ids).values_list("product_id", flat=True))
        unknown = [p for p in ids if p not in known]
        if unknown:
            raise ValidationError(_("No product has the id %(ids)s.") % {"ids": ", ".join(f"“{p}”" for p in unknown)})
        return ids

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        audience, source = data.get("audience"), data.get("source")
        Audience, Source = ColdStartRule.Audience, ColdStartRule.Source
        number, value = data.get("audience_number"), (data.get("audience_value") or "").strip()
        if audience in (Audience.FEW_EVENTS, Audience.NEW_ACCOUNT) and not number:
            self.add_error("audience_number", _("Give N (at least 1) for this audience."))
        if audience == Audience.CATEGORY:
            if not value:
                self.add_error("audience_value", _("Give the category slug shoppers arrive in."))
            elif not known("category", value):
                self.add_error("audience_value", _no_category(value))
        if audience == Audience.CAMPAIGN:
            if not value:
                self.add_error("audience_value", _("Give the campaign name (utm_campaign) shoppers arrive with."))
            elif not tracking.CAMPAIGN_PATTERN.match(value):
                self.add_error("audience_value", _("A campaign is letters, digits, “_”, “.” or “-”, up to 64."))
        if "audience_value" in data:
            data["audience_value"] = value
        source_value = (data.get("source_value") or "").strip()
        if "source_value" in data:
            data["source_value"] = source_value
        if source == Source.BRAND:
            if not source_value:
                self.add_error("source_value", _("Give the brand whose best sellers to show."))
            elif not known("brand", source_value):
                self.add_error("source_value", _("No product has the brand “%(brand)s”.") % {"brand": source_value})
        if source == Source.TRENDING_CATEGORY and source_value and not known("category", source_value):
            self.add_error("source_value", _no_category(source_value))
        if source == Source.PRICE_BAND:
            check_price_band(self, data, _("A price band"))
        if source == Source.HAND_PICKED and "products" in data and not data["products"]:
            self.add_error("products", _("Pick at least one product."))
        without_rules = [
            name for name in data.get("placements") or [] if "rules" not in serving.placement_config(name).fallback
        ]
        if without_rules:
            self.add_error(
                "placements",
                _(
                    "%(placements)s never asks the cold-start rules: its fallback has no “rules” step "
                    "(change that under Placements first)."
                )
                % {"placements": ", ".join(without_rules)},
            )
        check_window(self, data)
        return data

    def is_valid(self) -> bool:
        """With the Preview button, a valid form gets its preview and answers False, so the admin shows it again
        instead of saving it (and renders no error, as there is none)."""
        valid = super().is_valid()
        if valid and PREVIEW_BUTTON in self.data:
            category = str(self.data.get(PREVIEW_CATEGORY, "")).strip()[:255]
            self.preview = preview_rule(_unsaved_values(self.instance), category)
            return False
        return valid


@admin.register(ColdStartRule)
class ColdStartRuleAdmin(RuleAdmin):
    """Who sees what, where and when, for shoppers the model cannot serve yet; the change page previews the products."""

    form = ColdStartRuleForm
    list_display = ("name", "status", "priority", "who", "what", "where", "window", "updated_by")
    list_filter = ("active", "audience", "source")
    search_fields = ("name",)
    readonly_fields = ("created_at", "updated_at", "updated_by")
    change_form_template = "admin/recommendations/coldstartrule/change_form.html"
    fieldsets = (
        (None, {"fields": ("name", "active")}),
        (
            gettext_lazy("Who"),
            {
                "fields": ("audience", "audience_number", "audience_value"),
                "description": gettext_lazy(
                    "N is for “fewer than N events” and “accounts younger than N days”; the value is the "
                    "category slug or the campaign name."
                ),
            },
        ),
        (gettext_lazy("Where"), {"fields": ("placements",)}),
        (
            gettext_lazy("What"),
            {
                "fields": ("source", "source_value", "source_days", "price_min", "price_max", "products"),
                "description": gettext_lazy(
                    "The value is the brand, or the category for trending in a category (blank: the "
                    "page's category). Days are the window for top sellers and newest arrivals."
                ),
            },
        ),
        (
            gettext_lazy("When"),
            {"fields": ("starts_at", "ends_at"), "description": gettext_lazy("Blank: from now on, and with no end.")},
        ),
        (
            gettext_lazy("Priority"),
            {
                "fields": ("priority",),
                "description": gettext_lazy("When several live rules match a shopper, the highest wins."),
            },
        ),
        (gettext_lazy("History"), {"fields": ("created_at", "updated_at", "updated_by")}),
    )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {"saved_preview": None, **(extra_context or {})}
        if request.method == "GET":
            saved = ColdStartRule.objects.filter(pk=object_id).values().first() if object_id.isdigit() else None
            if saved is not None:
                category = request.GET.get(PREVIEW_CATEGORY, "").strip()[:255]
                extra_context["saved_preview"] = preview_rule(saved, category, saved=True)
        extra_context["placement_preview_url"] = reverse("admin:recommendations_placement_preview")
        return super().change_view(request, object_id, form_url, extra_context)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        extra_context = {
            "saved_preview": None,
            **(extra_context or {}),
            "placement_preview_url": reverse("admin:recommendations_placement_preview"),
        }
        return super().add_view(request, form_url, extra_context)

    @admin.display(description=gettext_lazy("status"))
    def status(self, obj: ColdStartRule) -> str:
        return rule_status_text(obj)

    @admin.display(description=gettext_lazy("who"), ordering="audience")
    def who(self, obj: ColdStartRule) -> str:
        label = obj.get_audience_display()
        if obj.audience in (ColdStartRule.Audience.FEW_EVENTS, ColdStartRule.Audience.NEW_ACCOUNT):
            return label.replace("N", str(obj.audience_number or "N"), 1)
        if obj.audience_value:
            return f"{label}: {obj.audience_value}"
        return label

    @admin.display(description=gettext_lazy("what"), ordering="source")
    def what(self, obj: ColdStartRule) -> str:
        label = obj.get_source_display()
        if obj.source == ColdStartRule.Source.HAND_PICKED:
            return f"{label}: {', '.join(obj.products[:5])}{' …' if len(obj.products) > 5 else ''}"
        if obj.source == ColdStartRule.Source.PRICE_BAND:
            return f"{label}: {price_band(obj.price_min, obj.price_max)}"
        return f"{label}: {obj.source_value}" if obj.source_value else label
