"""A/B/n experiments per placement: who sees which arm (`assignment`), what staff do with an experiment
(`operations`: checks, Start, Stop, Promote) and how the arms compare (`report`).

Bucketing is deterministic and needs no storage (see `assignment`). Serving asks `assign` once per block and stamps
the impression with `Arm.stamp`; `tracking.attribute` copies the stamp onto the click and onto any conversion
attributed to it, so the report counts every arm from the events' `variant` column.

The lists layer imports `assignment`, and importing it runs this `__init__` first: so this module re-exports only
`assignment`'s names and imports nothing above it. Callers above the lists import `operations` and `report` by name.
"""

from recommendations.experiments.assignment import (
    CACHE_KEY,
    Arm,
    arm_for,
    assign,
    bucket_point,
    running_for,
    stamp_of,
)

__all__ = ["CACHE_KEY", "Arm", "arm_for", "assign", "bucket_point", "running_for", "stamp_of"]
