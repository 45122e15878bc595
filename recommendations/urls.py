"""URLs of the recommendations app; a host includes them with `path("", include("recommendations.urls"))`."""

from django.urls import path

from recommendations.api.privacy import EraseView, ExportView
from recommendations.api.views import EventIngestView, RecommendationsView

app_name = "recommendations"
urlpatterns = [
    path("api/events/", EventIngestView.as_view(), name="ingest"),
    path("api/recommendations/<str:placement>/", RecommendationsView.as_view(), name="recommendations"),
    path("api/privacy/erase/", EraseView.as_view(), name="privacy_erase"),
    path("api/privacy/export/", ExportView.as_view(), name="privacy_export"),
]
