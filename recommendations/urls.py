"""URLs of the recommendations app; a host includes them with `path("", include("recommendations.urls"))`."""

from django.urls import path

from recommendations.api.health import health_view, metrics_view
from recommendations.api.privacy import EraseView, ExportView
from recommendations.api.views import EventIngestView, RecommendationsView
from recommendations.push.views import email_click, email_unsubscribe
from recommendations.views import consent

app_name = "recommendations"
urlpatterns = [
    path("api/events/", EventIngestView.as_view(), name="ingest"),
    path("api/recommendations/<str:placement>/", RecommendationsView.as_view(), name="recommendations"),
    path("api/privacy/erase/", EraseView.as_view(), name="privacy_erase"),
    path("api/privacy/export/", ExportView.as_view(), name="privacy_export"),
    path("health/", health_view, name="health"),
    path("metrics/", metrics_view, name="metrics"),
    path("privacy/consent/", consent, name="consent"),
    # The links in push e-mails (recommendations/push/views.py): a tracked click, and unsubscribe / preferences.
    path("e/c/<str:token>/", email_click, name="email_click"),
    path("e/u/<str:token>/", email_unsubscribe, name="email_unsubscribe"),
]
