"""The AppConfig a host adds as "recommendations.contrib.oscar": it connects the receivers of Oscar's signals."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RecommendationsOscarConfig(AppConfig):
    name = "recommendations.contrib.oscar"
    # Oscar's own app is labelled "oscar"; ours must not take that label.
    label = "recommendations_oscar"
    verbose_name = _("Recommendations for django-oscar")

    def ready(self) -> None:
        from recommendations.contrib.oscar import receivers

        receivers.connect()
