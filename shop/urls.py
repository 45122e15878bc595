"""The demo shop's URLs: the store pages, the admin, and the recommendations app's API."""

from django.contrib import admin
from django.urls import include, path

from shop import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("", include("recommendations.urls")),
]
