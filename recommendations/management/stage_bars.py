"""Progress bars for management commands, one per engine stage, driven by the engine's (stage, done, total) callback."""

from __future__ import annotations

import sys

from tqdm import tqdm


class StageBars:
    """One tqdm bar per stage, on stderr, driven by the engine's progress callback."""

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
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
