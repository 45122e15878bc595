"""What staff tune in the admin, as serving reads it: placements (`placements`), cold-start and merchandising rules
(`rules`) and the snapshot of both, with the running experiments, at one version stamp (`snapshot`).

Every name callers read as `tunables.X` is re-exported here. Nothing below this layer imports it (it reads
`experiments.assignment` and the lists' store), so importing the whole package from here is safe.
"""

from recommendations.tunables.placements import (
    CACHE_TTL,
    PLACEMENTS_KEY,
    Placement,
    UnknownPlacement,
    placement_names,
    placement_rows,
)
from recommendations.tunables.rules import (
    COLD_START_KEY,
    MERCHANDISING_KEY,
    SOURCE_TTL,
    Audience,
    Candidate,
    apply_merchandising,
    campaign_of,
    cold_start_rows,
    excluded_by,
    exploration_pool,
    exploration_slots,
    live_merchandising,
    matching_rule,
    matching_rule_in,
    merchandising_in,
    merchandising_rows,
    rotate,
    rule_candidates,
)
from recommendations.tunables.snapshot import (
    BUNDLE_HOLD,
    VERSION_KEY,
    Bundle,
    bundle,
    current_bundle,
    flush,
    placement_config,
    version_from,
)

__all__ = [
    "BUNDLE_HOLD",
    "CACHE_TTL",
    "COLD_START_KEY",
    "MERCHANDISING_KEY",
    "PLACEMENTS_KEY",
    "SOURCE_TTL",
    "VERSION_KEY",
    "Audience",
    "Bundle",
    "Candidate",
    "Placement",
    "UnknownPlacement",
    "apply_merchandising",
    "bundle",
    "campaign_of",
    "cold_start_rows",
    "current_bundle",
    "excluded_by",
    "exploration_pool",
    "exploration_slots",
    "flush",
    "live_merchandising",
    "matching_rule",
    "matching_rule_in",
    "merchandising_in",
    "merchandising_rows",
    "placement_config",
    "placement_names",
    "placement_rows",
    "rotate",
    "rule_candidates",
    "version_from",
]
