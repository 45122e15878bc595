"""Admin for the demo store's catalog, orders and favourites."""

from django.contrib import admin

from shop.models import Brand, Category, Favorite, Order, OrderLine, Product


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "category", "brand", "price", "stock", "is_active", "is_consumable", "created_at"]
    list_editable = ["price", "stock", "is_active"]
    list_filter = ["is_active", "is_consumable", "category", "brand"]
    list_select_related = ["category", "brand"]
    search_fields = ["name", "slug", "description", "brand__name"]
    prepopulated_fields = {"slug": ["name"]}
    autocomplete_fields = ["category", "brand"]
    date_hierarchy = "created_at"


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    autocomplete_fields = ["product"]
    readonly_fields = ["line_total"]

    @admin.display(description="Line total")
    def line_total(self, obj: OrderLine) -> str:
        return "" if obj.pk is None else str(obj.line_total)


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "email", "full_name", "total", "created_at"]
    list_select_related = ["user"]
    list_filter = ["created_at"]
    search_fields = ["email", "full_name", "user__username", "user__email"]
    date_hierarchy = "created_at"
    raw_id_fields = ["user"]
    inlines = [OrderLineInline]


@admin.register(Favorite)
class FavoriteAdmin(admin.ModelAdmin):
    list_display = ["user", "product", "created_at"]
    list_select_related = ["user", "product"]
    search_fields = ["user__username", "product__name"]
    raw_id_fields = ["user", "product"]
