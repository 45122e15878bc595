"""App config: wires the product-profile sync, the login merge, the erasure of deleted users and the task metrics to
signals, and gives the host's user admin "Erase recommendation data" (admin/privacy.py)."""

import sys

from django.apps import AppConfig
from django.utils.translation import gettext_lazy


class RecommendationsConfig(AppConfig):
    name = "recommendations"
    verbose_name = gettext_lazy("Recommendations")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from recommendations import conf, metrics, receivers, task_health, tunables  # noqa: F401 - checks, receivers
        from recommendations.api import throttling  # noqa: F401 - registers the throttle rates' check
        from recommendations.experiments import operations  # noqa: F401 - registers its receivers

        receivers.connect_product_signals()
        receivers.connect_user_signals()
        loaded_admin = sys.modules.get("recommendations.admin")
        if loaded_admin is not None:
            # The admin's autodiscover has run (it imports every app's admin at once), so the user admin registered now
            # is the host's last word: give it "Erase recommendation data".
            loaded_admin.attach_erase_action()
        metrics.connect_task_signals()
