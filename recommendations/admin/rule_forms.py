"""What the tunables' screens share: the placements field, the window and price-band checks, and the words for a
rule's status, window and placements; every change records its author in `updated_by`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations import serving
from recommendations.models import (
    ColdStartRule,
    MerchandisingRule,
    ProductProfile,
)

MAX_BLOCK_SIZE = 50


def username(request: HttpRequest) -> str:
    """Who saved the row, cut to `updated_by`'s length."""
    return request.user.get_username()[:150]


def window_text(starts_at: Any, ends_at: Any) -> str:
    """A rule's window in words: "always", "from …", "until …" or "… to …"."""
    when = [timezone.localtime(t).strftime("%Y-%m-%d %H:%M") if t else "" for t in (starts_at, ends_at)]
    if not any(when):
        return _("always")
    if not when[1]:
        return _("from %(start)s") % {"start": when[0]}
    if not when[0]:
        return _("until %(end)s") % {"end": when[1]}
    return _("%(start)s to %(end)s") % {"start": when[0], "end": when[1]}


def rule_status(rule: ColdStartRule | MerchandisingRule) -> str:
    """live, off, scheduled or ended: what serving does with the rule now."""
    now = timezone.now()
    if not rule.active:
        return "off"
    if rule.starts_at and rule.starts_at > now:
        return "scheduled"
    if rule.ends_at and rule.ends_at <= now:
        return "ended"
    return "live"


STATUS_WORDS = {
    "live": gettext_lazy("live"),
    "off": gettext_lazy("off"),
    "scheduled": gettext_lazy("scheduled"),
    "ended": gettext_lazy("ended"),
}


def rule_status_text(rule: ColdStartRule | MerchandisingRule) -> str:
    """`rule_status` in the staff member's language, for the list pages (the code compares the English word)."""
    return str(STATUS_WORDS[rule_status(rule)])


def placements_text(names: list[str]) -> str:
    """A rule's placements for the list page; none means every placement."""
    return ", ".join(names) if names else _("every placement")


def check_window(form: forms.ModelForm, data: dict[str, Any]) -> None:
    """A window that ends before it starts would never apply: say so on the end field."""
    starts, ends = data.get("starts_at"), data.get("ends_at")
    if starts and ends and ends <= starts:
        form.add_error("ends_at", _("The rule must end after it starts."))


def check_price_band(form: forms.ModelForm, data: dict[str, Any], what: str) -> None:
    """A price band needs a bound, and its bounds in order, or it would match nothing or everything."""
    low, high = data.get("price_min"), data.get("price_max")
    if low is None and high is None:
        form.add_error("price_min", _("%(what)s needs a lowest price, a highest price or both.") % {"what": what})
    elif low is not None and high is not None and low > high:
        form.add_error("price_max", _("The highest price must be at least the lowest price."))


def known(column: str, value: str) -> bool:
    """Whether any product profile has this category or brand (a rule on one nobody has would never apply)."""
    return ProductProfile.objects.filter(**{column: value}).exists()


class PlacementsField(forms.MultipleChoiceField):
    """The placements a rule applies to, from the configured ones; none ticked means every placement."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", gettext_lazy("None ticked: every placement."))
        super().__init__(choices=[(name, name) for name in serving.placement_names()], **kwargs)


def price_band(low: Decimal | None, high: Decimal | None) -> str:
    """A price band in words for the list pages: "a to b", "from a" or "up to b"."""
    if low is not None and high is not None:
        return _("%(start)s to %(end)s") % {"start": low, "end": high}
    return _("from %(start)s") % {"start": low} if low is not None else _("up to %(end)s") % {"end": high}


class RuleAdmin(admin.ModelAdmin):
    """What the cold-start and merchandising screens share: the history fieldset only on a saved rule, the author
    recorded on save, and the placements and window columns."""

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fieldsets if obj is not None else self.fieldsets[:-1]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        obj.updated_by = username(request)
        super().save_model(request, obj, form, change)

    @admin.display(description=gettext_lazy("where"))
    def where(self, obj: Any) -> str:
        return placements_text(obj.placements)

    @admin.display(description=gettext_lazy("window"))
    def window(self, obj: Any) -> str:
        return window_text(obj.starts_at, obj.ends_at)
