"""`manage.py sync_products`: bring every product profile in step with the host's product model.

Needed once after installing the app (and after bulk changes that skip signals, such as `bulk_create` or
`QuerySet.update`); ordinary saves keep profiles in step through the post_save receiver.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import FieldError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from tqdm import tqdm

from recommendations import catalog


class Command(BaseCommand):
    help = "Copy every host product into the engine's product profiles; profiles of deleted products become inactive."
    # What the sync needs it checks itself and refuses in one line (the system checks' report is a page of text).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            catalog.get_product_model()
        except (LookupError, ValueError) as exc:
            raise CommandError(
                _("RECOMMENDATIONS['PRODUCT_MODEL'] is not usable: %(error)s") % {"error": exc}
            ) from None
        try:
            total = catalog.product_queryset(catalog.load_product_adapter()).count()
        except catalog.ProductFieldsError as exc:
            raise CommandError(str(exc)) from None
        with tqdm(
            total=total, desc="products", unit=" products", file=sys.stderr, disable=options["no_progress"]
        ) as bar:
            try:
                counts = catalog.sync_products(progress=bar)
            except catalog.ProductFieldsError as exc:
                raise CommandError(str(exc)) from None
            except FieldError as exc:
                raise CommandError(
                    _("RECOMMENDATIONS['PRODUCT_FIELDS'] is not usable: %(error)s") % {"error": exc}
                ) from None
        synced = ngettext("Synced %(count)d product profile", "Synced %(count)d product profiles", counts["synced"])
        deactivated = ngettext(
            "%(count)d profile of a product no longer in the catalog was deactivated.",
            "%(count)d profiles of products no longer in the catalog were deactivated.",
            counts["deactivated"],
        )
        self.stdout.write(
            "; ".join([synced % {"count": counts["synced"]}, deactivated % {"count": counts["deactivated"]}])
        )
