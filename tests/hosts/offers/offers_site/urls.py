"""The host's URLs and, as the README's step 3 says, the app's."""

from catalog import views
from django.urls import include, path

urlpatterns = [
    path("", views.home, name="home"),
    path("products/<uuid:pk>/", views.product_detail, name="product"),
    path("", include("recommendations.urls")),
]
