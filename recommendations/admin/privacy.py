"""Privacy: the erasure log, "Erase a shopper" and "Export a shopper" (the log's Add button and a link beside it),
an action on the events screen that erases the shoppers of the selected events after a confirmation, and "Erase
recommendation data" on the host's own user admin (`EraseRecommendationDataMixin`, put there by `attach_erase_action`).

Both forms need the add permission on erasure requests; after an erase the page offers "Retrain now", so the next
model is trained without the erased shoppers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations import privacy
from recommendations.admin.base import ReadOnlyAdmin
from recommendations.models import ConsentChoice, ErasureRequest, Event, StoredList

_SEPARATORS = re.compile(r"[\s,]+")


def _split(text: str) -> list[str]:
    return [part for part in _SEPARATORS.split(text or "") if part]


class ShopperForm(forms.Form):
    user_ids = forms.CharField(
        label=gettext_lazy("User ids"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text=gettext_lazy("One or more, separated by spaces, commas or new lines."),
    )
    visitor_ids = forms.CharField(
        label=gettext_lazy("Visitor ids"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text=gettext_lazy("The visitor cookie's value; the visitors merged into a user named above come along."),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            data["subjects"] = privacy.resolve(_split(data.get("user_ids", "")), _split(data.get("visitor_ids", "")))
        except privacy.InvalidSubjects as exc:
            self.add_error(exc.field, exc.message)
        return data


@admin.register(ErasureRequest)
class ErasureRequestAdmin(ReadOnlyAdmin):
    """The log of erasures: who, when, through what and how many rows; its Add button erases a shopper."""

    list_display = ("requested_at", "requested_by", "via", "subjects", "counts", "finished_at")
    list_filter = ("via",)
    readonly_fields = ("requested_at", "requested_by", "via", "subjects", "counts", "finished_at", "subject_hashes")
    date_hierarchy = "requested_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.add_erasurerequest")

    def get_urls(self) -> list[URLPattern]:
        export = path(
            "export/", self.admin_site.admin_view(self.export_view), name="recommendations_erasurerequest_export"
        )
        return [export, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_erase": self.has_add_permission(request)}
        return super().changelist_view(request, extra_context)

    def _page(self, request: HttpRequest, form: ShopperForm, mode: str, **context: Any) -> TemplateResponse:
        title = _("Erase a shopper") if mode == "erase" else _("Export a shopper")
        return TemplateResponse(
            request,
            "admin/recommendations/erasurerequest/shopper_form.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": title,
                "form": form,
                "mode": mode,
                "action_url": reverse("admin:recommendations_erasurerequest_add")
                if mode == "erase"
                else reverse("admin:recommendations_erasurerequest_export"),
                **context,
            },
        )

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        """Erase a shopper: the form, then the counts and a "Retrain now" button."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return self._page(request, ShopperForm(), "erase")
        form = ShopperForm(request.POST)
        if not form.is_valid():
            return self._page(request, form, "erase")
        subjects = form.cleaned_data["subjects"]
        record = privacy.erase(
            subjects.user_ids, subjects.visitor_ids, requested_by=request.user.get_username(), via="admin"
        )
        self.log_addition(request, record, "Erased shoppers' data from the admin.")
        self.message_user(request, erased_message(record), messages.SUCCESS)
        return self._page(
            request,
            ShopperForm(),
            "erase",
            record=record,
            can_retrain=request.user.has_perm("recommendations.add_trainingrun"),
        )

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Export a shopper: the form, then one JSON document to download."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return self._page(request, ShopperForm(), "export")
        form = ShopperForm(request.POST)
        if not form.is_valid():
            return self._page(request, form, "export")
        subjects = form.cleaned_data["subjects"]
        document = privacy.export(subjects.user_ids, subjects.visitor_ids)
        response = HttpResponse(
            json.dumps(document, ensure_ascii=False, indent=1), content_type="application/json; charset=utf-8"
        )
        response["Content-Disposition"] = 'attachment; filename="shopper-export.json"'
        return response


def erased_message(record: ErasureRequest) -> str:
    counts = record.counts
    keys = counts.get("cache_keys")
    return _(
        "Erased: %(events)s events, %(lists)s stored lists, %(keys)s cache keys (erasure #%(pk)s). Models trained "
        "before still hold item-item statistics their events contributed to; retrain to leave them out."
    ) % {
        "events": counts.get("events", 0),
        "lists": counts.get("stored_lists", 0),
        "keys": "?" if keys is None else keys,
        "pk": record.pk,
    }


@admin.action(description=gettext_lazy("Erase the shoppers of the selected events…"), permissions=["erase"])
def erase_shoppers(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
    """The erase form, filled with the selected events' user and visitor ids, to confirm (nothing is erased yet)."""
    rows = queryset.order_by().values_list("user_id", "visitor_id").distinct()[:10_000]
    users = sorted({u for u, _v in rows if u})
    visitors = sorted({v for u, v in rows if v and not u})
    form = ShopperForm(initial={"user_ids": "\n".join(users), "visitor_ids": "\n".join(visitors)})
    site = model_admin.admin_site
    erasures = site._registry.get(ErasureRequest) or ErasureRequestAdmin(ErasureRequest, site)
    return erasures._page(request, form, "erase")


# --- "Erase recommendation data" on the host's user admin ------------------------------------------------------------

USERS_SHOWN = 100  # users listed by name on the confirmation page; the rest are counted


def may_erase(request: HttpRequest) -> bool:
    """The permission every erasure from the admin needs: *add erasure request*, as for "Erase a shopper"."""
    return request.user.has_perm("recommendations.add_erasurerequest")


@admin.action(description=gettext_lazy("Erase recommendation data"), permissions=["erase_recommendation_data"])
def erase_recommendation_data(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> Any:
    """The selected users' recommendation data: first a page listing them and what goes, then, once confirmed, the
    erasure (privacy.erase, recorded as an ErasureRequest and in the admin's history). The users stay."""
    if not may_erase(request):  # the action is not offered without it; a hand-made POST gets no further
        raise PermissionDenied
    count = queryset.count()
    if count > privacy.MAX_IDS:
        model_admin.message_user(
            request,
            _("Select at most %(most)s users at a time; %(count)s were selected.")
            % {"most": privacy.MAX_IDS, "count": count},
            messages.ERROR,
        )
        return None
    user_ids = [str(pk) for pk in queryset.order_by("pk").values_list("pk", flat=True)]
    if request.POST.get("post") == "yes":
        record = privacy.erase(user_ids, requested_by=request.user.get_username(), via="admin")
        model_admin.log_addition(request, record, "Erased users' recommendation data from the admin.")
        model_admin.message_user(request, erased_message(record), messages.SUCCESS)
        return None
    subjects = privacy.resolve(user_ids)
    shown = list(queryset.order_by("pk")[:USERS_SHOWN])
    per_user = dict(
        Event.objects.filter(user_id__in=[str(u.pk) for u in shown])
        .order_by()
        .values_list("user_id")
        .annotate(n=Count("pk"))
        .values_list("user_id", "n")
    )
    opts = model_admin.model._meta
    return TemplateResponse(
        request,
        "admin/recommendations/erase_users_confirmation.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": _("Erase recommendation data"),
            "opts": opts,
            "users": [(user, per_user.get(str(user.pk), 0)) for user in shown],
            "more": count - len(shown),
            "count": count,
            "events": sum(
                Event.objects.filter(piece).count() for piece in subjects.events_filters(privacy.IDS_PER_STATEMENT)
            ),
            "lists": StoredList.objects.filter(subject__in=subjects.shoppers).count(),
            "linked_visitors": len(subjects.linked_visitor_ids),
            "user_ids": user_ids,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action": erase_recommendation_data.__name__,
        },
    )


class EraseRecommendationDataMixin:
    """Gives a user ModelAdmin the "Erase recommendation data" action, offered to staff holding *add erasure
    request*. The app puts it on the user admin registered on `admin.site` by itself (`attach_erase_action`); use the
    mixin for a user admin on another admin site, or one registered after the app's admin was loaded:
    `class MyUserAdmin(EraseRecommendationDataMixin, UserAdmin)`."""

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)  # type: ignore[misc]
        offered = self.actions is not None and IS_POPUP_VAR not in request.GET  # type: ignore[attr-defined]
        if offered and self.has_erase_recommendation_data_permission(request):
            name = erase_recommendation_data.__name__
            actions.setdefault(name, (erase_recommendation_data, name, erase_recommendation_data.short_description))
        return actions

    def has_erase_recommendation_data_permission(self, request: HttpRequest) -> bool:
        return may_erase(request)


def attach_erase_action(site: admin.AdminSite = admin.site) -> bool:
    """Mix `EraseRecommendationDataMixin` into the user model's registered ModelAdmin on `site` (idempotent); False
    when the user model is not registered there.

    Runs when the app's admin is imported (autodiscover) and again when the app is ready, after a host's own admin
    modules may have registered their user admin anew.
    """
    user_model = get_user_model()
    if not site.is_registered(user_model):
        return False
    model_admin = site.get_model_admin(user_model)
    if not isinstance(model_admin, EraseRecommendationDataMixin):
        base = type(model_admin)
        model_admin.__class__ = type(
            base.__name__, (EraseRecommendationDataMixin, base), {"__module__": base.__module__}
        )
    return True


@admin.register(ConsentChoice)
class ConsentChoiceAdmin(ReadOnlyAdmin):
    """Signed-in shoppers' answers to "may the shop personalise for me": how many said yes or no, and when. The rows
    name nobody (a keyed hash of the user id), so staff see the counts, not who."""

    list_display = ("short_subject", "personalised", "changed_at")
    list_filter = ("personalised",)
    date_hierarchy = "changed_at"
    ordering = ("-changed_at",)

    @admin.display(description=gettext_lazy("subject hash"))
    def short_subject(self, obj: ConsentChoice) -> str:
        return obj.subject[:16] + "…"
