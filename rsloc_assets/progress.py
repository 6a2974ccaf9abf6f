"""Progress of long work (gallery builds, embedding, benchmarks): done / total, rate and ETA.

Lines go through `logging`, so the terminal shows them (the `rsloc` CLI and the benchmarks
log `rsloc_assets` at INFO) and so does the Dagster run log (`dagster_home/dagster.yaml` hands
the `rsloc_assets` logger to Dagster)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

EVERY_S = 10.0  # seconds between two progress lines of one piece of work


def duration(seconds: float | None) -> str:
    """Seconds as h:mm:ss ("?" while unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@dataclass
class Progress:
    """`done` of `total` units of `what`, logged at the first step, at most every `every_s`
    seconds after it, and at the end."""

    what: str
    total: int
    unit: str = "tiles"
    every_s: float = EVERY_S
    logger: logging.Logger = log
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    _logged: float = field(default=-math.inf, repr=False)

    def advance(self, n: int = 1) -> None:
        """Count `n` more units done; log a line if one is due."""
        self.done += n
        now = time.perf_counter()
        if self.done >= self.total or now - self._logged >= self.every_s:
            self._logged = now
            self.logger.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """E.g. "embedding mosaics: 1,200/30,913 tiles (4%), 9.8 tiles/s, ETA 0:50:32", or
        "query_patches: 3/40 queries (8%), 12.5 s each, ETA 0:07:42"."""
        elapsed = (time.perf_counter() if now is None else now) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = max(0, self.total - self.done)
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        share = self.done / self.total if self.total else 1.0
        # Under one a second (queries), the seconds each: "0.0 queries/s" says nothing.
        pace = f"{rate:.1f} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s each"
        return (
            f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({share:.0%}),"
            f" {pace}, ETA {duration(eta)}"
        )
