"""The issue's wrong-features case: the README's string-lookup pattern on a many-to-many (`categories__slug`),
which joins a product once per category. `manage.py check` must refuse it (recommendations.E009)."""

from offers_site.settings import *  # noqa: F403
from offers_site.settings import RECOMMENDATIONS

RECOMMENDATIONS = {
    **RECOMMENDATIONS,
    "PRODUCT_FIELDS": {**RECOMMENDATIONS["PRODUCT_FIELDS"], "category": "categories__slug"},
}
