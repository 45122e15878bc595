"""App config: wires the product-profile sync, the login merge and the erasure of deleted users to signals."""

from django.apps import AppConfig


class RecommendationsConfig(AppConfig):
    name = "recommendations"
    verbose_name = "Recommendations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from recommendations import conf, experiments, receivers, rules  # noqa: F401 - registers the check, receivers
        from recommendations.api import throttling  # noqa: F401 - registers the throttle rates' check

        receivers.connect_product_signals()
        receivers.connect_user_signals()
