"""The app's admin, one module per screen; importing this package (Django's admin autodiscovery does) registers all.

- `events`: events, read-only; `profiles`: product profiles and "Sync from the catalog now".
- `runs`: training runs (retrain, activate, roll back), precompute runs, recommendation sets and stored lists.
- `analytics`: the per-placement daily report, its CSV and the training runs' metrics chart.
- `experiments`: experiments and their arms, start / stop / promote, the live report.
- `rules`: placements, cold-start and merchandising rules, the placement preview.
- `charts`: the server-side SVG charts the report pages draw; `base`: what the screens share.
"""

from recommendations.admin import analytics, events, experiments, profiles, rules, runs  # noqa: F401
from recommendations.admin.base import ReadOnlyAdmin
from recommendations.admin.events import EventAdmin
from recommendations.admin.profiles import ProductProfileAdmin
from recommendations.admin.runs import (
    PrecomputeRunAdmin,
    RecommendationSetAdmin,
    StoredListAdmin,
    TrainingRunAdmin,
    beat_schedules,
    placement_counts,
    report_launch,
)

__all__ = [
    "EventAdmin",
    "PrecomputeRunAdmin",
    "ProductProfileAdmin",
    "ReadOnlyAdmin",
    "RecommendationSetAdmin",
    "StoredListAdmin",
    "TrainingRunAdmin",
    "beat_schedules",
    "placement_counts",
    "report_launch",
]
