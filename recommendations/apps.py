"""App config: wires the product-profile sync and the login merge to signals."""

from django.apps import AppConfig


class RecommendationsConfig(AppConfig):
    name = "recommendations"
    verbose_name = "Recommendations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from recommendations import conf, experiments, rules, signals  # noqa: F401 - registers the check, receivers

        signals.connect_product_signals()
