"""The host's own pages: a home page and a product page, each carrying the app's blocks."""

from uuid import UUID

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from catalog.models import Product
from recommendations.tracking import record_event


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


def product_detail(request: HttpRequest, pk: UUID) -> HttpResponse:
    product = get_object_or_404(Product.objects.prefetch_related("categories", "offers"), pk=pk)
    record_event(request, "view", product_id=product.pk)
    return render(request, "catalog/product.html", {"product": product})
