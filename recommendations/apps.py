"""App config: wires the product-profile sync, the login merge and the erasure of deleted users to signals."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy


class RecommendationsConfig(AppConfig):
    name = "recommendations"
    verbose_name = gettext_lazy("Recommendations")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from recommendations import conf, receivers, tunables  # noqa: F401 - registers the check, receivers
        from recommendations.api import throttling  # noqa: F401 - registers the throttle rates' check
        from recommendations.experiments import operations  # noqa: F401 - registers its receivers

        receivers.connect_product_signals()
        receivers.connect_user_signals()
