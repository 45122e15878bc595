"""The admin's tunables: placements, cold-start rules, merchandising rules, and "what does this shopper see here".

Serving reads these rows through `tunables`, whose cache every save and delete flushes, so a change shows on the next
page. The forms refuse what serving would silently ignore (an unknown placement, a hand-picked product the catalog does
not have, a campaign name that can never match, a window that ends before it starts), and every change records its
author in `updated_by` besides Django's own history (LogEntry).

Two previews, both read-only:
- a cold-start rule's change page lists the products the rule yields right now; its *Preview* button re-renders the
  form with what the edited, unsaved values would yield (the form validates, then answers "not valid" to the admin so
  it renders instead of saving). It POSTs, so it takes the change (or add) permission like saving does;
- *Placements > Preview* shows the block `serving.recommend(..., preview=True)` builds for a shopper, with each item's
  source and reason, the model and experiment arm behind it. It records no impression and caches no block.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _

from recommendations import serving, tracking, tunables
from recommendations.conf import FALLBACK_STEPS, rec_settings
from recommendations.models import (
    ColdStartRule,
    Event,
    Experiment,
    MerchandisingRule,
    Placement,
    ProductProfile,
    TrainingRun,
)

logger = logging.getLogger(__name__)

PREVIEW_BUTTON = "_preview"  # the rule form's "Preview" submit button: validate and show, never save
PREVIEW_CATEGORY = "_preview_category"  # the page category a preview assumes (trending in a category needs one)
MAX_BLOCK_SIZE = 50
MAX_EXPLORATION_SHARE = 0.5
SHOPPER_KEY = re.compile(r"^[uv]:[A-Za-z0-9_.@+-]{1,64}$")
PRODUCT_SEPARATORS = re.compile(r"[\s,;]+")
UNKNOWN_TARGET = {
    "product_id": "No product has the id",
    "category": "No product is in the category",
    "brand": "No product has the brand",
}
STEP_LABELS = {
    "rules": "rules: the cold-start rules",
    "similar": "similar: the page product's similar list",
    "trending_category": "trending in the page's category",
    "trending": "trending shop-wide",
    "popular": "popular: best sellers",
}
SOURCE_LABELS = {
    "stored": "the model's stored list",
    "session": "this session's views (re-ranked at serving time)",
    "history": "the shopper's own history",
    "trending": "trending",
    "popular": "best sellers",
    "similar": "similar to the page product",
    "newest": "newest arrivals",
    "exploration": "exploration slot for a new product",
    "pinned": "pinned by a merchandising rule",
}

BLOCK_SOURCES = {
    "stored": "its own candidates, then the fallback chain where short",
    "fallback": "the fallback chain alone (nothing of its own for this shopper)",
}


def _admin_url(name: str, *args: Any) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def _username(request: HttpRequest) -> str:
    return request.user.get_username()[:150]


def _window(starts_at: Any, ends_at: Any) -> str:
    """A rule's window in words: "always", "from …", "until …" or "… to …"."""
    when = [timezone.localtime(t).strftime("%Y-%m-%d %H:%M") if t else "" for t in (starts_at, ends_at)]
    if not any(when):
        return "always"
    if not when[1]:
        return f"from {when[0]}"
    if not when[0]:
        return f"until {when[1]}"
    return f"{when[0]} to {when[1]}"


def _status(rule: ColdStartRule | MerchandisingRule) -> str:
    """live, off, scheduled or ended: what serving does with the rule now."""
    now = timezone.now()
    if not rule.active:
        return "off"
    if rule.starts_at and rule.starts_at > now:
        return "scheduled"
    if rule.ends_at and rule.ends_at <= now:
        return "ended"
    return "live"


def _placements_text(names: list[str]) -> str:
    return ", ".join(names) if names else "every placement"


def _check_window(form: forms.ModelForm, data: dict[str, Any]) -> None:
    starts, ends = data.get("starts_at"), data.get("ends_at")
    if starts and ends and ends <= starts:
        form.add_error("ends_at", "The rule must end after it starts.")


def _check_price_band(form: forms.ModelForm, data: dict[str, Any], what: str) -> None:
    low, high = data.get("price_min"), data.get("price_max")
    if low is None and high is None:
        form.add_error("price_min", f"{what} needs a lowest price, a highest price or both.")
    elif low is not None and high is not None and low > high:
        form.add_error("price_max", "The highest price must be at least the lowest price.")


def _known(column: str, value: str) -> bool:
    """Whether any product profile has this category or brand (a rule on one nobody has would never apply)."""
    return ProductProfile.objects.filter(**{column: value}).exists()


class PlacementsField(forms.MultipleChoiceField):
    """The placements a rule applies to, from the configured ones; none ticked means every placement."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "None ticked: every placement.")
        super().__init__(choices=[(name, name) for name in serving.placement_names()], **kwargs)


# -- placements ----------------------------------------------------------------------------------------------------


class OrderedStepsWidget(forms.MultiWidget):
    """One select per position: an ordered choice of distinct steps, with no script."""

    template_name = "admin/recommendations/placement/ordered_steps.html"

    def __init__(self, choices: list[tuple[str, str]], count: int) -> None:
        widgets = [
            forms.Select(choices=[("", "—"), *choices], attrs={"aria-label": f"Fallback step {i + 1}"})
            for i in range(count)
        ]
        super().__init__(widgets)

    def decompress(self, value: Any) -> list[str]:
        steps = [str(step) for step in (value or [])][: len(self.widgets)]
        return steps + [""] * (len(self.widgets) - len(steps))


class OrderedStepsField(forms.MultiValueField):
    """The fallback chain: steps from conf.FALLBACK_STEPS, in order, each at most once; blanks are skipped."""

    def __init__(self, **kwargs: Any) -> None:
        choices = [(step, STEP_LABELS.get(step, step)) for step in FALLBACK_STEPS]
        count = len(FALLBACK_STEPS)
        super().__init__(
            fields=[forms.ChoiceField(choices=choices, required=False) for _ in range(count)],
            widget=OrderedStepsWidget(choices, count),
            require_all_fields=False,
            required=False,
            **kwargs,
        )

    def compress(self, data_list: list[str]) -> list[str]:
        steps = [step for step in data_list or [] if step]
        repeated = sorted({step for step in steps if steps.count(step) > 1}, key=steps.index)
        if repeated:
            raise ValidationError(f"Each step may come once; repeated: {', '.join(repeated)}.")
        return steps


class PlacementForm(forms.ModelForm):
    fallback = OrderedStepsField(
        help_text="What fills a short block, first to last. Leave it empty for a block that should rather stay "
        "short (recently viewed, buy again). Cold-start rules apply only where “rules” is a step."
    )

    class Meta:
        model = Placement
        fields = (
            "name",
            "title",
            "enabled",
            "size",
            "strategy",
            "allow_bought",
            "max_per_category",
            "max_per_brand",
            "fallback",
            "exploration_share",
            "exploration_max_age_days",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "name" in self.fields:  # only when adding: the name is read-only afterwards
            taken = set(Placement.objects.values_list("name", flat=True))
            self.fields["name"] = forms.ChoiceField(
                choices=[(n, n) for n in serving.placement_names() if n not in taken],
                help_text="A placement from RECOMMENDATIONS['PLACEMENTS'] that has no row yet.",
            )
        name = self.instance.name if self.instance.pk else ""
        if name and "title" in self.fields:
            default = rec_settings.TITLES.get(name) or rec_settings.PLACEMENTS.get(name, {}).get("title", "")
            self.fields["title"].help_text = f"Shown above the block. Blank: “{default}” (from the settings)."

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name not in serving.placement_names():
            raise ValidationError(f"There is no placement called “{name}” in RECOMMENDATIONS['PLACEMENTS'].")
        return name

    def clean_size(self) -> int:
        size = self.cleaned_data["size"]
        if not 1 <= size <= MAX_BLOCK_SIZE:
            raise ValidationError(f"A block shows 1 to {MAX_BLOCK_SIZE} items.")
        return size

    def clean_exploration_share(self) -> float:
        share = self.cleaned_data["exploration_share"]
        if not 0 <= share <= MAX_EXPLORATION_SHARE:
            raise ValidationError(
                f"Between 0 and {MAX_EXPLORATION_SHARE}: at least half of a block stays the model's choice."
            )
        return share

    def clean_exploration_max_age_days(self) -> int:
        days = self.cleaned_data["exploration_max_age_days"]
        if days < 1:
            raise ValidationError("At least one day.")
        return days


@admin.register(Placement)
class PlacementAdmin(admin.ModelAdmin):
    """The surfaces as staff tune them; a row overrides the settings for its placement, at once.

    The built-in placements cannot be deleted. Deleting a row would not remove the block: serving would silently go
    back to RECOMMENDATIONS["PLACEMENTS"], undoing every change staff made without saying so. Untick *enabled* to hide
    a block. A row whose name is no longer configured (the settings changed) serves nothing and may be deleted.
    """

    form = PlacementForm
    list_display = (
        "name",
        "title",
        "enabled",
        "size",
        "strategy",
        "exploration",
        "caps",
        "fallback_chain",
        "updated_by",
        "updated_at",
    )
    list_display_links = ("name",)
    list_filter = ("enabled", "strategy")
    readonly_fields = ("updated_at", "updated_by")
    change_list_template = "admin/recommendations/placement/change_list.html"
    change_form_template = "admin/recommendations/placement/change_form.html"
    fieldsets = (
        (None, {"fields": ("name", "title", "enabled", "size", "strategy")}),
        ("Filters and diversity", {"fields": ("allow_bought", "max_per_category", "max_per_brand")}),
        ("When the block is short", {"fields": ("fallback",)}),
        ("New products", {"fields": ("exploration_share", "exploration_max_age_days")}),
        ("History", {"fields": ("updated_at", "updated_by")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        return ("name", *fields) if obj is not None else fields

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:  # nothing to show in the history yet
            return self.fieldsets[:-1]
        return self.fieldsets

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """Adding a row for ?name=<placement> starts from that placement's settings, which it will override."""
        initial = super().get_changeform_initial_data(request)
        config = rec_settings.PLACEMENTS.get(request.GET.get("name", ""))
        if config:
            initial.update({key: value for key, value in config.items() if key in PlacementForm.Meta.fields})
        return initial

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Only a configured placement without a row may be added (migration 0006 seeds one per placement)."""
        if not super().has_add_permission(request):
            return False
        return bool(set(serving.placement_names()) - set(Placement.objects.values_list("name", flat=True)))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None or obj.name in serving.placement_names():
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Placement, form: Any, change: bool) -> None:
        obj.updated_by = _username(request)
        super().save_model(request, obj, form, change)

    @admin.display(description="exploration", ordering="exploration_share")
    def exploration(self, obj: Placement) -> str:
        return f"{obj.exploration_share:.0%}" if obj.exploration_share else "-"

    @admin.display(description="caps (category / brand)")
    def caps(self, obj: Placement) -> str:
        return f"{obj.max_per_category or '-'} / {obj.max_per_brand or '-'}"

    @admin.display(description="fallback")
    def fallback_chain(self, obj: Placement) -> str:
        return " → ".join(obj.fallback or []) or "none"

    # -- the preview page ---------------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        preview = path(
            "preview/", self.admin_site.admin_view(self.preview_view), name="recommendations_placement_preview"
        )
        return [preview, *super().get_urls()]  # before the change URLs, whose "<path:object_id>/" would take it

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "preview_url": reverse("admin:recommendations_placement_preview")}
        return super().changelist_view(request, extra_context)

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """What a shopper would see in a placement right now (GET; view permission on placements; writes nothing)."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        if not self.has_view_permission(request):
            raise PermissionDenied
        asked = {k: v for k, v in request.GET.items() if k in PreviewForm.base_fields}
        form = PreviewForm(asked or None, initial={"who": "anonymous", "placement": "for_you"})
        result = preview_block(form.cleaned_data) if asked and form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Preview a placement",
            "form": form,
            "result": result,
            "categories": list(
                ProductProfile.objects.exclude(category="").values_list("category", flat=True).distinct()[:200]
            ),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/recommendations/placement/preview.html", context)


class PreviewForm(forms.Form):
    placement = forms.ChoiceField()
    who = forms.ChoiceField(
        choices=[("anonymous", "A new anonymous visitor"), ("shopper", "This shopper")],
        required=False,
        widget=forms.RadioSelect,
        label="Shopper",
    )
    shopper = forms.CharField(
        required=False,
        max_length=66,
        label="Shopper key",
        help_text="u:<user id> for an account, v:<visitor id> for a browser (the rec_vid cookie), as in Events.",
    )
    product = forms.CharField(required=False, max_length=64, label="Product id", help_text="The page's product")
    category = forms.CharField(required=False, max_length=255, help_text="The page's category slug")
    campaign = forms.CharField(required=False, max_length=64, help_text="utm_campaign the visit arrived with")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["placement"].choices = [(n, n) for n in serving.placement_names()]

    def clean_shopper(self) -> str:
        key = self.cleaned_data["shopper"].strip()
        if key and not SHOPPER_KEY.match(key):
            raise ValidationError("Write u:<user id> or v:<visitor id>, as the Events list shows them.")
        return key

    def clean_product(self) -> str:
        product = self.cleaned_data["product"].strip()
        if product and not ProductProfile.objects.filter(product_id=product).exists():
            raise ValidationError(f"No product has the id “{product}”.")
        return product

    def clean_campaign(self) -> str:
        campaign = self.cleaned_data["campaign"].strip()
        if campaign and not tracking.CAMPAIGN_PATTERN.match(campaign):
            raise ValidationError("A campaign is letters, digits, “_”, “.” or “-”, as utm_campaign is read.")
        return campaign

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("who") == "shopper" and not data.get("shopper"):
            self.add_error("shopper", "Give the shopper's key, or choose a new anonymous visitor.")
        return data


@dataclass
class PreviewRow:
    rank: int
    product_id: str
    name: str
    url: str
    category: str
    price: Any
    reason_text: str
    source: str
    source_label: str
    source_url: str = ""
    rules: list[tuple[str, str]] = field(default_factory=list)  # (merchandising rule name, its admin URL)


def preview_block(data: dict[str, Any]) -> dict[str, Any]:
    """Build the block as the template tag would for this shopper and page, without caching it or recording it."""
    # A key without a choice means that shopper; "a new anonymous visitor" (or nothing at all) means a fresh one.
    anonymous = data.get("who") == "anonymous" or not data.get("shopper")
    shopper = f"v:{tracking.new_visitor_id()}" if anonymous else data["shopper"]
    placement = data["placement"]
    block = serving.recommend(
        placement,
        shopper=shopper,
        product_id=data.get("product") or "",
        category=data.get("category") or "",
        campaign=data.get("campaign") or "",
        preview=True,
    )
    block = serving.attach_products(block)
    ids = [item.product_id for item in block.items]
    profiles = {p.product_id: p for p in ProductProfile.objects.filter(product_id__in=ids)}
    rule_ids = {item.source.split(":", 1)[1] for item in block.items if item.source.startswith("rule:")}
    cold_start = {
        str(pk): name
        for pk, name in ColdStartRule.objects.filter(pk__in=[r for r in rule_ids if r.isdigit()]).values_list(
            "pk", "name"
        )
    }
    merchandising: dict[str, str] = {}
    for pk, name in MerchandisingRule.objects.filter(
        name__in={n for item in block.items for n in item.rules}
    ).values_list("pk", "name"):
        merchandising.setdefault(name, _admin_url("admin:recommendations_merchandisingrule_change", pk))
    rows = []
    for rank, item in enumerate(block.items, start=1):
        profile = profiles.get(item.product_id)
        source, url = item.source, ""
        if source.startswith("rule:"):
            rule_id = source.split(":", 1)[1]
            label = f"cold-start rule “{cold_start.get(rule_id, rule_id)}”"
            if rule_id in cold_start:
                url = _admin_url("admin:recommendations_coldstartrule_change", rule_id)
        else:
            label = SOURCE_LABELS.get(source, source)
        product_url = ""
        if item.product is not None and hasattr(item.product, "get_absolute_url"):
            product_url = item.product.get_absolute_url()
        rows.append(
            PreviewRow(
                rank=rank,
                product_id=item.product_id,
                name=(profile.name if profile else "") or str(item.product),
                url=product_url,
                category=profile.category if profile else "",
                price=profile.price if profile else None,
                reason_text=item.reason_text,
                source=source,
                source_label=label,
                source_url=url,
                rules=[(name, merchandising.get(name, "")) for name in item.rules],
            )
        )
    experiment_url = ""
    if block.variant:
        experiment_id = block.variant.split(":", 1)[0]
        if experiment_id.isdigit() and Experiment.objects.filter(pk=experiment_id).exists():
            experiment_url = _admin_url("admin:recommendations_experiment_change", experiment_id)
    serving_run = TrainingRun.objects.filter(is_serving=True).first()
    set_id = serving.active_set_id()
    config = serving.placement_config(placement)
    user_url = ""
    if shopper.startswith("u:"):
        from django.contrib.auth import get_user_model

        user_model = get_user_model()
        key = shopper[2:]
        try:
            if user_model.objects.filter(pk=key).exists():
                user_url = _admin_url(f"admin:{user_model._meta.app_label}_{user_model._meta.model_name}_change", key)
        except (ValueError, ValidationError):  # an imported shopper whose id is not a local user's
            user_url = ""
    # Live pins of this placement that cannot show: the preview says why a pinned slot is not where staff expect it.
    unshown_pins = []
    for rule in MerchandisingRule.objects.live().filter(action=MerchandisingRule.Action.PIN):
        if rule.placements and placement not in rule.placements:
            continue
        problem = pin_problem(rule)
        if problem:
            url = _admin_url("admin:recommendations_merchandisingrule_change", rule.pk)
            unshown_pins.append((rule.name, url, problem))
    return {
        "block": block,
        "rows": rows,
        "unshown_pins": unshown_pins,
        "config": config,
        "shopper": shopper,
        "anonymous": anonymous,
        "user_url": user_url,
        "events": Event.objects.filter(shopper=shopper).exclude(event_type="impression").count(),
        "block_source": BLOCK_SOURCES.get(block.source, block.source),
        "experiment_url": experiment_url,
        "serving_run": serving_run,
        "serving_run_url": _admin_url("admin:recommendations_trainingrun_change", serving_run.pk)
        if serving_run
        else "",
        "set_id": set_id,
        "set_url": _admin_url("admin:recommendations_recommendationset_change", set_id) if set_id else "",
        "events_url": _admin_url("admin:recommendations_event_changelist") + "?" + urlencode({"shopper": shopper})
        if not anonymous
        else "",
    }


# -- cold-start rules ------------------------------------------------------------------------------------------------


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
        preview.note = "Trending in the page's category: give a category to preview it for a page of that category."
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
            state = "inactive" if not profile["active"] else "out of stock"
            preview.left_out.append(f"{profile['name'] or pid} ({pid}): {state}")
    if not preview.rows and not preview.note:
        preview.note = "The rule yields no product right now; the block goes on to its next fallback step."
    return preview


def _unsaved_values(rule: ColdStartRule) -> dict[str, Any]:
    values = {f.attname: getattr(rule, f.attname) for f in ColdStartRule._meta.concrete_fields}
    digest = hashlib.sha256(repr(sorted(values.items(), key=lambda kv: kv[0])).encode()).hexdigest()[:16]
    values["updated_at"] = f"preview:{digest}"
    return values


class ColdStartRuleForm(forms.ModelForm):
    placements = PlacementsField()
    products = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        help_text="For hand-picked products: product ids in order, one per line or separated by commas. "
        "Preview lists their names.",
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
            raise ValidationError(f"No product has the id {', '.join(f'“{p}”' for p in unknown)}.")
        return ids

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        audience, source = data.get("audience"), data.get("source")
        Audience, Source = ColdStartRule.Audience, ColdStartRule.Source
        number, value = data.get("audience_number"), (data.get("audience_value") or "").strip()
        if audience in (Audience.FEW_EVENTS, Audience.NEW_ACCOUNT) and not number:
            self.add_error("audience_number", "Give N (at least 1) for this audience.")
        if audience == Audience.CATEGORY:
            if not value:
                self.add_error("audience_value", "Give the category slug shoppers arrive in.")
            elif not _known("category", value):
                self.add_error("audience_value", f"No product is in the category “{value}”.")
        if audience == Audience.CAMPAIGN:
            if not value:
                self.add_error("audience_value", "Give the campaign name (utm_campaign) shoppers arrive with.")
            elif not tracking.CAMPAIGN_PATTERN.match(value):
                self.add_error("audience_value", "A campaign is letters, digits, “_”, “.” or “-”, up to 64.")
        if "audience_value" in data:
            data["audience_value"] = value
        source_value = (data.get("source_value") or "").strip()
        if "source_value" in data:
            data["source_value"] = source_value
        if source == Source.BRAND:
            if not source_value:
                self.add_error("source_value", "Give the brand whose best sellers to show.")
            elif not _known("brand", source_value):
                self.add_error("source_value", f"No product has the brand “{source_value}”.")
        if source == Source.TRENDING_CATEGORY and source_value and not _known("category", source_value):
            self.add_error("source_value", f"No product is in the category “{source_value}”.")
        if source == Source.PRICE_BAND:
            _check_price_band(self, data, "A price band")
        if source == Source.HAND_PICKED and "products" in data and not data["products"]:
            self.add_error("products", "Pick at least one product.")
        without_rules = [
            name for name in data.get("placements") or [] if "rules" not in serving.placement_config(name).fallback
        ]
        if without_rules:
            self.add_error(
                "placements",
                f"{', '.join(without_rules)} never asks the cold-start rules: its fallback has no “rules” step "
                "(change that under Placements first).",
            )
        _check_window(self, data)
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
class ColdStartRuleAdmin(admin.ModelAdmin):
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
            "Who",
            {
                "fields": ("audience", "audience_number", "audience_value"),
                "description": "N is for “fewer than N events” and “accounts younger than N days”; the value is the "
                "category slug or the campaign name.",
            },
        ),
        ("Where", {"fields": ("placements",)}),
        (
            "What",
            {
                "fields": ("source", "source_value", "source_days", "price_min", "price_max", "products"),
                "description": "The value is the brand, or the category for trending in a category (blank: the "
                "page's category). Days are the window for top sellers and newest arrivals.",
            },
        ),
        ("When", {"fields": ("starts_at", "ends_at"), "description": "Blank: from now on, and with no end."}),
        (
            "Priority",
            {"fields": ("priority",), "description": "When several live rules match a shopper, the highest wins."},
        ),
        ("History", {"fields": ("created_at", "updated_at", "updated_by")}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fieldsets if obj is not None else self.fieldsets[:-1]

    def save_model(self, request: HttpRequest, obj: ColdStartRule, form: Any, change: bool) -> None:
        obj.updated_by = _username(request)
        super().save_model(request, obj, form, change)

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

    @admin.display(description="status")
    def status(self, obj: ColdStartRule) -> str:
        return _status(obj)

    @admin.display(description="who", ordering="audience")
    def who(self, obj: ColdStartRule) -> str:
        label = obj.get_audience_display()
        if obj.audience in (ColdStartRule.Audience.FEW_EVENTS, ColdStartRule.Audience.NEW_ACCOUNT):
            return label.replace("N", str(obj.audience_number or "N"), 1)
        if obj.audience_value:
            return f"{label}: {obj.audience_value}"
        return label

    @admin.display(description="what", ordering="source")
    def what(self, obj: ColdStartRule) -> str:
        label = obj.get_source_display()
        if obj.source == ColdStartRule.Source.HAND_PICKED:
            return f"{label}: {', '.join(obj.products[:5])}{' …' if len(obj.products) > 5 else ''}"
        if obj.source == ColdStartRule.Source.PRICE_BAND:
            return f"{label}: {_price_band(obj.price_min, obj.price_max)}"
        return f"{label}: {obj.source_value}" if obj.source_value else label

    @admin.display(description="where")
    def where(self, obj: ColdStartRule) -> str:
        return _placements_text(obj.placements)

    @admin.display(description="window")
    def window(self, obj: ColdStartRule) -> str:
        return _window(obj.starts_at, obj.ends_at)


def _price_band(low: Decimal | None, high: Decimal | None) -> str:
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f"from {low}" if low is not None else f"up to {high}"


# -- merchandising rules -----------------------------------------------------------------------------------------


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
            return _("No product of the %(what)s “%(value)s” is active and in stock, so the pin never shows.") % {
                "what": column,
                "value": rule.target_value,
            }
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
            raise ValidationError("At least 1 (1 leaves the order alone; 2 doubles or halves a product's score).")
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
                self.add_error("target_value", f"Give the {'product id' if target == Target.PRODUCT else column}.")
            elif not _known(column, value):
                self.add_error("target_value", f"{UNKNOWN_TARGET[column]} “{value}”.")
        if target == Target.PRICE_BAND:
            _check_price_band(self, data, "A price band")
        if action == Action.PIN:
            position = data.get("position")
            if not position:
                self.add_error("position", "A pin needs the position (1 is the first slot).")
            elif position > MAX_BLOCK_SIZE:
                self.add_error("position", f"A block has at most {MAX_BLOCK_SIZE} slots.")
        _check_window(self, data)
        return data


@admin.register(MerchandisingRule)
class MerchandisingRuleAdmin(admin.ModelAdmin):
    """Boost, bury, pin or exclude after the model ranks; every placement's preview shows which rule moved what."""

    form = MerchandisingRuleForm
    list_display = ("name", "status", "priority", "action", "target_text", "where", "window", "updated_by")
    list_filter = ("active", "action", "target")
    search_fields = ("name", "target_value")
    readonly_fields = ("created_at", "updated_at", "updated_by")
    fieldsets = (
        (None, {"fields": ("name", "active")}),
        ("Where", {"fields": ("placements",)}),
        (
            "What",
            {
                "fields": ("action", "target", "target_value", "price_min", "price_max", "position", "strength"),
                "description": "The value is the product id, category slug or brand. A pin puts the product (or the "
                "best-ranked one of the category, brand or price band) at the position; boost and bury multiply "
                "and divide a product's rank score by the strength.",
            },
        ),
        ("When", {"fields": ("starts_at", "ends_at"), "description": "Blank: from now on, and with no end."}),
        (
            "Priority",
            {"fields": ("priority",), "description": "Lowest priority applies first: the highest has the last word."},
        ),
        ("History", {"fields": ("created_at", "updated_at", "updated_by")}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fieldsets if obj is not None else self.fieldsets[:-1]

    def save_model(self, request: HttpRequest, obj: MerchandisingRule, form: Any, change: bool) -> None:
        obj.updated_by = _username(request)
        super().save_model(request, obj, form, change)
        problem = pin_problem(obj) if _status(obj) in ("live", "scheduled") else ""
        if problem:
            self.message_user(
                request,
                _("Saved, but “%(name)s” will not show: %(why)s") % {"name": obj.name, "why": problem},
                messages.WARNING,
            )

    @admin.display(description="status")
    def status(self, obj: MerchandisingRule) -> str:
        """What serving does with the rule now; a live pin that cannot show says so instead of reading "live"."""
        status = _status(obj)
        if status in ("live", "scheduled") and pin_problem(obj):
            return _("%(status)s — never shows: nothing it pins is active and in stock") % {"status": status}
        return status

    @admin.display(description="target", ordering="target")
    def target_text(self, obj: MerchandisingRule) -> str:
        if obj.target == MerchandisingRule.Target.PRICE_BAND:
            text = f"price {_price_band(obj.price_min, obj.price_max)}"
        else:
            text = f"{obj.target} {obj.target_value}"
        if obj.action == MerchandisingRule.Action.PIN:
            return f"{text} at {obj.position}"
        if obj.action in (MerchandisingRule.Action.BOOST, MerchandisingRule.Action.BURY):
            return f"{text} x{obj.strength:g}"
        return text

    @admin.display(description="where")
    def where(self, obj: MerchandisingRule) -> str:
        return _placements_text(obj.placements)

    @admin.display(description="window")
    def window(self, obj: MerchandisingRule) -> str:
        return _window(obj.starts_at, obj.ends_at)
