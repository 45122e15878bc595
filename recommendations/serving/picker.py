"""Choosing a block's items from its candidates: the filters (servable, not blocked, not excluded by merchandising),
the diversity caps per category and brand, then pins and the exploration share."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from recommendations import tunables
from recommendations.engine import reasons
from recommendations.serving.block import Recommendation, Request
from recommendations.serving.profiles import _profiles
from recommendations.serving.reasons import _iter_anchors
from recommendations.tunables import Candidate, Placement


class _Picker:
    """Filters and diversity: keeps the first servable candidates, at most N per category and per brand."""

    def __init__(self, size: int, blocked: set[str], config: Placement, category_cap: int) -> None:
        self.size = size
        self.blocked = set(blocked)
        self.config = config
        self.category_cap = category_cap  # none for a block scoped to one category: it is all one category
        self.initially_blocked = frozenset(blocked)  # the filters' verdict, for pins and exploration
        self.excluding: list[dict[str, Any]] = []  # merchandising rules; their excludes hold for fallback items too
        self.chosen: list[Recommendation] = []
        self.deferred: list[Recommendation] = []  # over a diversity cap: used only if nothing else fills the block
        self.per_category: dict[str, int] = defaultdict(int)
        self.per_brand: dict[str, int] = defaultdict(int)

    @property
    def full(self) -> bool:
        return len(self.chosen) >= self.size

    def offer(self, candidates: list[Candidate]) -> None:
        fresh = [c for c in candidates if c[0] not in self.blocked]
        if not fresh or self.full:
            return
        # Fetch profiles for a window of candidates at a time: most blocks fill from the first window.
        window = max(self.size * 4, 32)
        for start in range(0, len(fresh), window):
            part = fresh[start : start + window]
            # The products the reasons name come in the same query: _name_reasons finds them in the pass.
            profiles = _profiles([pid for pid, *_ in part], also=_iter_anchors(reason for _, _, reason, _ in part))
            for pid, score, reason, source in part:
                if self.full:
                    return
                if pid in self.blocked:
                    continue
                profile = profiles.get(pid)
                if profile is None or not (profile.active and profile.in_stock):
                    continue
                if self.excluding and tunables.excluded_by(self.excluding, profile, pid):
                    continue
                self.blocked.add(pid)
                item = Recommendation(product_id=pid, score=float(score), reason=reason, source=source)
                category, brand = profile.category, profile.brand
                cap_c, cap_b = self.category_cap, self.config.max_per_brand
                if (cap_c and category and self.per_category[category] >= cap_c) or (
                    cap_b and brand and self.per_brand[brand] >= cap_b
                ):
                    self.deferred.append(item)
                    continue
                self.per_category[category] += 1
                self.per_brand[brand] += 1
                self.chosen.append(item)

    def relax(self) -> None:
        """A short block takes the items the caps held back rather than stay short."""
        while not self.full and self.deferred:
            self.chosen.append(self.deferred.pop(0))


def _pin(items: list[Recommendation], pins: dict[int, str], picker: _Picker, size: int) -> list[Recommendation]:
    """Put pinned products at their 1-based positions (a pin to a product that cannot be shown is skipped)."""
    items = list(items)
    for position in sorted(pins):
        pid = pins[position]
        existing = next((i for i in items if i.product_id == pid), None)
        if existing is None:
            profile = _profiles([pid]).get(pid)
            if profile is None or not (profile.active and profile.in_stock) or pid in picker.initially_blocked:
                continue
            existing = Recommendation(product_id=pid, score=0.0, reason=reasons.FEATURED, source="pinned")
        else:
            items.remove(existing)
        items.insert(min(position - 1, len(items)), existing)
    return items[:size]


def _explore(
    items: list[Recommendation], config: Placement, req: Request, picker: _Picker, size: int
) -> list[Recommendation]:
    """Give a share of the slots to young products with no events yet, a different few per shopper and day."""
    slots = tunables.exploration_slots(size, config.exploration_share)
    if not slots:
        return items
    shown = {i.product_id for i in items}
    pool = [
        pid
        for pid in tunables.exploration_pool(config.exploration_max_age_days)
        if pid not in shown and pid not in picker.initially_blocked
    ]
    picks = tunables.rotate(pool, req.shopper or "anonymous", len(slots))
    items = list(items)
    for slot, pid in zip(slots, picks, strict=False):
        items.insert(
            min(slot, len(items)), Recommendation(product_id=pid, score=0.0, reason=reasons.NEW, source="exploration")
        )
    return items[:size]
