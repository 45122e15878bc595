"""Progress bars for management commands, one per engine stage, driven by the engine's (stage, done, total) callback."""

from __future__ import annotations

import sys

from tqdm import tqdm


class StageBars:
    """One tqdm bar per stage, on stderr, driven by the engine's progress callback; n stays within the bar's total."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"{stage:<18}", unit="", file=sys.stderr, leave=True)
        if self.bar is None:
            return
        # A stage may learn its size late (it starts as 1 step, then a model reports its epochs or items), and a
        # stage made of several inner steps reports each with its own total: follow the latest total, never run past it.
        total = max(int(total), 1)
        if total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()
        self.bar.update(min(max(int(done), 0), total) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
