"""The app's admin, one module per screen; importing this package (Django's admin autodiscovery does) registers all.

- `events`: events, read-only; `profiles`: product profiles and "Sync from the catalog now".
- `training`: training runs (retrain, activate, roll back); `precompute`: precompute runs (run now);
  `sets`: recommendation sets (activate one) and their stored lists.
- `analytics`: the per-placement daily report, its CSV and the training runs' metrics chart.
- `experiments`: experiments and their arms, start / stop / promote, the live report.
- `placements`: placements and their preview page (`preview`); `cold_start`: cold-start rules and their preview;
  `merchandising`: merchandising rules; `rule_forms`: the fields and checks those screens share.
- `push`: flows (enable, send now, preview one shopper's e-mail), the messages and e-mail consents, read-only.
- `privacy`: the erasure log, "Erase a shopper" and "Export a shopper", the events screen's erase action, and
  "Erase recommendation data" on the host's user admin (attached below, once this package has registered the rest).
- `charts`: the server-side SVG charts the report pages draw; `base`: what the screens share (the read-only admin,
  the schedules box, the report of a run started from the admin).
"""

from recommendations.admin import (  # noqa: F401
    analytics,
    cold_start,
    events,
    experiments,
    merchandising,
    placements,
    precompute,
    preview,
    privacy,
    profiles,
    push,
    sets,
    training,
)
from recommendations.admin.base import ReadOnlyAdmin, beat_schedules, report_launch
from recommendations.admin.events import EventAdmin
from recommendations.admin.precompute import PrecomputeRunAdmin
from recommendations.admin.privacy import EraseRecommendationDataMixin, attach_erase_action
from recommendations.admin.profiles import ProductProfileAdmin
from recommendations.admin.sets import RecommendationSetAdmin, StoredListAdmin, placement_counts
from recommendations.admin.training import TrainingRunAdmin

__all__ = [
    "EraseRecommendationDataMixin",
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

# The user admin registered so far (django.contrib.auth's, when listed before this app); apps.ready() does it again.
attach_erase_action()
