"""Oscar's URLs, ours, and Django's i18n (the language switch)."""

from django.apps import apps
from django.urls import include, path

urlpatterns = [
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("recommendations.urls")),
    path("", include(apps.get_app_config("oscar").urls[0])),
]
