"""The product profiles screen: the catalog as the engine sees it, read-only, with "Sync from the catalog now"."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from recommendations import catalog
from recommendations.admin.base import ReadOnlyAdmin
from recommendations.models import ProductProfile


@admin.register(ProductProfile)
class ProductProfileAdmin(ReadOnlyAdmin):
    list_display = ("product_id", "name", "category", "brand", "price", "in_stock", "active", "sales_count")
    list_filter = ("active", "in_stock")
    search_fields = ("=product_id", "name", "brand", "category")
    ordering = ("product_id",)
    actions = ["sync_from_catalog"]

    def has_sync_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("recommendations.change_productprofile")

    @admin.action(description=gettext_lazy("Sync all profiles from the catalog now"), permissions=["sync"])
    def sync_from_catalog(self, request: HttpRequest, queryset: QuerySet) -> None:
        result = catalog.sync_products()
        self.message_user(
            request,
            _("Synced %(synced)s products; %(deactivated)s profiles deactivated.")
            % {"synced": result["synced"], "deactivated": result["deactivated"]},
            messages.SUCCESS,
        )
