"""Merchandising rules: boost, bury, pin or exclude after the model ranks; a pin that can never show says so.

The form refuses a target the catalog does not have, and every change records its author in `updated_by`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations.admin.rule_forms import (
    MAX_BLOCK_SIZE,
    PlacementsField,
    RuleAdmin,
    check_price_band,
    check_window,
    known,
    price_band,
    rule_status,
    rule_status_text,
)
from recommendations.models import (
    MerchandisingRule,
    ProductProfile,
)

UNKNOWN_TARGET = {
    "product_id": gettext_lazy("No product has the id “%(value)s”."),
    "category": gettext_lazy("No product is in the category “%(value)s”."),
    "brand": gettext_lazy("No product has the brand “%(value)s”."),
}
WANTED_TARGET = {
    "product_id": gettext_lazy("Give the product id."),
    "category": gettext_lazy("Give the category."),
    "brand": gettext_lazy("Give the brand."),
}


def pin_problem(rule: MerchandisingRule) -> str:
    """Why a pin can never show right now, in a sentence, or "" when it can (or the rule is no pin).

    Serving leaves out inactive and out-of-stock products before pins are placed, so a pin on such a product (or on a
    category, brand or price band with no product left to show) is saved, reads "live" and silently never shows.
    """
    Action, Target = MerchandisingRule.Action, MerchandisingRule.Target
    if rule.action != Action.PIN:
        return ""
    showable = ProductProfile.objects.filter(active=True, in_stock=True)
    if rule.target == Target.PRODUCT:
        profile = ProductProfile.objects.filter(product_id=rule.target_value).values("name", "active", "in_stock")
        row = profile.first()
        if row is None:
            return _("No product has the id “%(id)s”, so the pin never shows.") % {"id": rule.target_value}
        name = row["name"] or rule.target_value
        if not row["active"]:
            return _("“%(name)s” is inactive, so the pin never shows until it is active again.") % {"name": name}
        if not row["in_stock"]:
            return _("“%(name)s” is out of stock, so the pin never shows until it is back in stock.") % {"name": name}
        return ""
    if rule.target in (Target.CATEGORY, Target.BRAND):
        column = "category" if rule.target == Target.CATEGORY else "brand"
        if not showable.filter(**{column: rule.target_value}).exists():
            if column == "category":
                text = _("No product of the category “%(value)s” is active and in stock, so the pin never shows.")
            else:
                text = _("No product of the brand “%(value)s” is active and in stock, so the pin never shows.")
            return text % {"value": rule.target_value}
        return ""
    if rule.target == Target.PRICE_BAND:
        if rule.price_min is not None:
            showable = showable.filter(price__gte=rule.price_min)
        if rule.price_max is not None:
            showable = showable.filter(price__lte=rule.price_max)
        if not showable.exists():
            return _("No product in the price band is active and in stock, so the pin never shows.")
    return ""


class MerchandisingRuleForm(forms.ModelForm):
    placements = PlacementsField()

    class Meta:
        model = MerchandisingRule
        fields = (
            "name",
            "active",
            "priority",
            "placements",
            "action",
            "target",
            "target_value",
            "price_min",
            "price_max",
            "position",
            "strength",
            "starts_at",
            "ends_at",
        )

    def clean_strength(self) -> float:
        strength = self.cleaned_data["strength"]
        if strength < 1:
            raise ValidationError(_("At least 1 (1 leaves the order alone; 2 doubles or halves a product's score)."))
        return strength

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        action, target = data.get("action"), data.get("target")
        Action, Target = MerchandisingRule.Action, MerchandisingRule.Target
        value = (data.get("target_value") or "").strip()
        if "target_value" in data:
            data["target_value"] = value
        if target in (Target.PRODUCT, Target.CATEGORY, Target.BRAND):
            column = {Target.PRODUCT: "product_id", Target.CATEGORY: "category", Target.BRAND: "brand"}[target]
            if not value:
                self.add_error("target_value", str(WANTED_TARGET[column]))
            elif not known(column, value):
                self.add_error("target_value", UNKNOWN_TARGET[column] % {"value": value})
        if target == Target.PRICE_BAND:
            check_price_band(self, data, _("A price band"))
        if action == Action.PIN:
            position = data.get("position")
            if not position:
                self.add_error("position", _("A pin needs the position (1 is the first slot)."))
            elif position > MAX_BLOCK_SIZE:
                self.add_error("position", _("A block has at most %(most)s slots.") % {"most": MAX_BLOCK_SIZE})
        check_window(self, data)
        return data


@admin.register(MerchandisingRule)
class MerchandisingRuleAdmin(RuleAdmin):
    """Boost, bury, pin or exclude after the model ranks; every placement's preview shows which rule moved what."""

    form = MerchandisingRuleForm
    list_display = ("name", "status", "priority", "action", "target_text", "where", "window", "updated_by")
    list_filter = ("active", "action", "target")
    search_fields = ("name", "target_value")
    readonly_fields = ("created_at", "updated_at", "updated_by")
    fieldsets = (
        (None, {"fields": ("name", "active")}),
        (gettext_lazy("Where"), {"fields": ("placements",)}),
        (
            gettext_lazy("What"),
            {
                "fields": ("action", "target", "target_value", "price_min", "price_max", "position", "strength"),
                "description": gettext_lazy(
                    "The value is the product id, category slug or brand. A pin puts the product (or the "
                    "best-ranked one of the category, brand or price band) at the position; boost and bury multiply "
                    "and divide a product's rank score by the strength."
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
                "description": gettext_lazy("Lowest priority applies first: the highest has the last word."),
            },
        ),
        (gettext_lazy("History"), {"fields": ("created_at", "updated_at", "updated_by")}),
    )

    def save_model(self, request: HttpRequest, obj: MerchandisingRule, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        problem = pin_problem(obj) if rule_status(obj) in ("live", "scheduled") else ""
        if problem:
            self.message_user(
                request,
                _("Saved, but “%(name)s” will not show: %(why)s") % {"name": obj.name, "why": problem},
                messages.WARNING,
            )

    @admin.display(description=gettext_lazy("status"))
    def status(self, obj: MerchandisingRule) -> str:
        """What serving does with the rule now; a live pin that cannot show says so instead of reading "live"."""
        status = rule_status_text(obj)
        if rule_status(obj) in ("live", "scheduled") and pin_problem(obj):
            return _("%(status)s — never shows: nothing it pins is active and in stock") % {"status": status}
        return status

    @admin.display(description=gettext_lazy("target"), ordering="target")
    def target_text(self, obj: MerchandisingRule) -> str:
        if obj.target == MerchandisingRule.Target.PRICE_BAND:
            text = _("price %(band)s") % {"band": price_band(obj.price_min, obj.price_max)}
        else:
            text = f"{obj.target} {obj.target_value}"
        if obj.action == MerchandisingRule.Action.PIN:
            return _("%(target)s at %(position)s") % {"target": text, "position": obj.position}
        if obj.action in (MerchandisingRule.Action.BOOST, MerchandisingRule.Action.BURY):
            return f"{text} x{obj.strength:g}"
        return text
