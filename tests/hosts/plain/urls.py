"""Step 3 of the README: the app's URLs, and pages that carry its blocks."""

from django.shortcuts import get_object_or_404, render
from django.urls import include, path

from recommendations.tracking import record_event
from tests.hosts.plain.catalog.models import Item


def home(request):
    return render(request, "home.html")


def item(request, pk: int):
    product = get_object_or_404(Item, pk=pk)
    record_event(request, "view", product_id=product.pk)
    return render(request, "item.html", {"product": product})


urlpatterns = [
    path("", home),
    path("items/<int:pk>/", item),
    path("", include("recommendations.urls")),
]
