"""URLs of the recommendations app; a host includes them with `path("", include("recommendations.urls"))`."""

from django.urls import path  # noqa: F401

app_name = "recommendations"
urlpatterns: list = []
