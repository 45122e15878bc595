"""*Placements > Preview*: the block `serving.recommend(..., preview=True)` builds for a shopper, with each item's
source and reason, the model and experiment arm behind it. Read-only: it records no impression and caches no block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations import serving, tracking
from recommendations.admin.merchandising import pin_problem
from recommendations.models import (
    ColdStartRule,
    Event,
    Experiment,
    MerchandisingRule,
    ProductProfile,
    TrainingRun,
)

SHOPPER_KEY = re.compile(r"^[uv]:[A-Za-z0-9_.@+-]{1,64}$")

SOURCE_LABELS = {
    "stored": gettext_lazy("the model's stored list"),
    "session": gettext_lazy("this session's views (re-ranked at serving time)"),
    "history": gettext_lazy("the shopper's own history"),
    "trending": gettext_lazy("trending"),
    "popular": gettext_lazy("best sellers"),
    "similar": gettext_lazy("similar to the page product"),
    "newest": gettext_lazy("newest arrivals"),
    "exploration": gettext_lazy("exploration slot for a new product"),
    "pinned": gettext_lazy("pinned by a merchandising rule"),
}

BLOCK_SOURCES = {
    "stored": gettext_lazy("its own candidates, then the fallback chain where short"),
    "fallback": gettext_lazy("the fallback chain alone (nothing of its own for this shopper)"),
}


def _admin_url(name: str, *args: Any) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


class PreviewForm(forms.Form):
    placement = forms.ChoiceField()
    who = forms.ChoiceField(
        choices=[("anonymous", gettext_lazy("A new anonymous visitor")), ("shopper", gettext_lazy("This shopper"))],
        required=False,
        widget=forms.RadioSelect,
        label=gettext_lazy("Shopper"),
    )
    shopper = forms.CharField(
        required=False,
        max_length=66,
        label=gettext_lazy("Shopper key"),
        help_text=gettext_lazy(
            "u:<user id> for an account, v:<visitor id> for a browser (the rec_vid cookie), as in Events."
        ),
    )
    product = forms.CharField(
        required=False, max_length=64, label=gettext_lazy("Product id"), help_text=gettext_lazy("The page's product")
    )
    category = forms.CharField(required=False, max_length=255, help_text=gettext_lazy("The page's category slug"))
    campaign = forms.CharField(
        required=False, max_length=64, help_text=gettext_lazy("utm_campaign the visit arrived with")
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["placement"].choices = [(n, n) for n in serving.placement_names()]

    def clean_shopper(self) -> str:
        key = self.cleaned_data["shopper"].strip()
        if key and not SHOPPER_KEY.match(key):
            raise ValidationError(_("Write u:<user id> or v:<visitor id>, as the Events list shows them."))
        return key

    def clean_product(self) -> str:
        product = self.cleaned_data["product"].strip()
        if product and not ProductProfile.objects.filter(product_id=product).exists():
            raise ValidationError(_("No product has the id “%(id)s”.") % {"id": product})
        return product

    def clean_campaign(self) -> str:
        campaign = self.cleaned_data["campaign"].strip()
        if campaign and not tracking.CAMPAIGN_PATTERN.match(campaign):
            raise ValidationError(_("A campaign is letters, digits, “_”, “.” or “-”, as utm_campaign is read."))
        return campaign

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("who") == "shopper" and not data.get("shopper"):
            self.add_error("shopper", _("Give the shopper's key, or choose a new anonymous visitor."))
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
            label = _("cold-start rule “%(name)s”") % {"name": cold_start.get(rule_id, rule_id)}
            if rule_id in cold_start:
                url = _admin_url("admin:recommendations_coldstartrule_change", rule_id)
        else:
            label = str(SOURCE_LABELS.get(source, source))
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
        "title": serving.shown_title(block.title or config.title),
        "rows": rows,
        "unshown_pins": unshown_pins,
        "config": config,
        "shopper": shopper,
        "anonymous": anonymous,
        "user_url": user_url,
        "events": Event.objects.filter(shopper=shopper).exclude(event_type="impression").count(),
        "block_source": str(BLOCK_SOURCES.get(block.source, block.source)),
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
