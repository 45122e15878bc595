"""Placements as staff tune them: size, strategy, caps, the fallback chain and exploration, and the preview page.

Serving reads these rows through `tunables`, whose cache every save and delete flushes, so a change shows on the next
page. The form refuses what serving would silently ignore (an unknown placement, a size or share out of range).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext, gettext_lazy

from recommendations import serving
from recommendations.admin.preview import PreviewForm, preview_block
from recommendations.admin.rule_forms import MAX_BLOCK_SIZE, username
from recommendations.conf import FALLBACK_STEPS, rec_settings
from recommendations.models import (
    Placement,
    ProductProfile,
)

MAX_EXPLORATION_SHARE = 0.5

STEP_LABELS = {
    "rules": gettext_lazy("rules: the cold-start rules"),
    "similar": gettext_lazy("similar: the page product's similar list"),
    "trending_category": gettext_lazy("trending in the page's category"),
    "trending": gettext_lazy("trending shop-wide"),
    "popular": gettext_lazy("popular: best sellers"),
}


class OrderedStepsWidget(forms.MultiWidget):
    """One select per position: an ordered choice of distinct steps, with no script."""

    template_name = "admin/recommendations/placement/ordered_steps.html"

    def __init__(self, choices: list[tuple[str, str]], count: int) -> None:
        widgets = [
            forms.Select(
                choices=[("", "—"), *choices],
                attrs={"aria-label": gettext("Fallback step %(number)s") % {"number": i + 1}},
            )
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
            raise ValidationError(
                gettext("Each step may come once; repeated: %(steps)s.") % {"steps": ", ".join(repeated)}
            )
        return steps


class PlacementForm(forms.ModelForm):
    fallback = OrderedStepsField(
        help_text=gettext_lazy(
            "What fills a short block, first to last. Leave it empty for a block that should rather stay "
            "short (recently viewed, buy again). Cold-start rules apply only where “rules” is a step."
        )
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
                help_text=gettext_lazy("A placement from RECOMMENDATIONS['PLACEMENTS'] that has no row yet."),
            )
        name = self.instance.name if self.instance.pk else ""
        if name and "title" in self.fields:
            default = rec_settings.TITLES.get(name) or rec_settings.PLACEMENTS.get(name, {}).get("title", "")
            self.fields["title"].help_text = gettext(
                "Shown above the block. Blank: “%(default)s” (from the settings), shown in the shopper's language."
            ) % {"default": default}

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name not in serving.placement_names():
            raise ValidationError(
                gettext("There is no placement called “%(name)s” in RECOMMENDATIONS['PLACEMENTS'].") % {"name": name}
            )
        return name

    def clean_size(self) -> int:
        size = self.cleaned_data["size"]
        if not 1 <= size <= MAX_BLOCK_SIZE:
            raise ValidationError(gettext("A block shows 1 to %(most)s items.") % {"most": MAX_BLOCK_SIZE})
        return size

    def clean_exploration_share(self) -> float:
        share = self.cleaned_data["exploration_share"]
        if not 0 <= share <= MAX_EXPLORATION_SHARE:
            raise ValidationError(
                gettext("Between 0 and %(most)s: at least half of a block stays the model's choice.")
                % {"most": MAX_EXPLORATION_SHARE}
            )
        return share

    def clean_exploration_max_age_days(self) -> int:
        days = self.cleaned_data["exploration_max_age_days"]
        if days < 1:
            raise ValidationError(gettext("At least one day."))
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
        (gettext_lazy("Filters and diversity"), {"fields": ("allow_bought", "max_per_category", "max_per_brand")}),
        (gettext_lazy("When the block is short"), {"fields": ("fallback",)}),
        (gettext_lazy("New products"), {"fields": ("exploration_share", "exploration_max_age_days")}),
        (gettext_lazy("History"), {"fields": ("updated_at", "updated_by")}),
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
        obj.updated_by = username(request)
        super().save_model(request, obj, form, change)

    @admin.display(description=gettext_lazy("exploration"), ordering="exploration_share")
    def exploration(self, obj: Placement) -> str:
        return f"{obj.exploration_share:.0%}" if obj.exploration_share else "-"

    @admin.display(description=gettext_lazy("caps (category / brand)"))
    def caps(self, obj: Placement) -> str:
        return f"{obj.max_per_category or '-'} / {obj.max_per_brand or '-'}"

    @admin.display(description=gettext_lazy("fallback"))
    def fallback_chain(self, obj: Placement) -> str:
        return " → ".join(obj.fallback or []) or gettext("none")

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
            "title": gettext("Preview a placement"),
            "form": form,
            "result": result,
            "categories": list(
                ProductProfile.objects.exclude(category="").values_list("category", flat=True).distinct()[:200]
            ),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/recommendations/placement/preview.html", context)
