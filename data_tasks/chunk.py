"""A chunk: one job's turn at one lane of a data task, and the state it keeps while it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


class Fenced(Exception):
    """Another chunk owns the lane now, or its run was paused, cancelled or claimed again."""


@dataclass
class Chunk:
    """The state of one chunk job while it runs one lane."""

    version: str
    lane: int
    # The lane's epoch this chunk started at, and the run's epoch it belongs to.
    epoch: int
    run_epoch: int
    cursor: Any
    upper: Any
    processed: int
    total: int | None
    batch_size: int
    planned: bool
    started: float
    batches: int = 0
    rows: int = 0

    @property
    def ids(self) -> dict[str, Any]:
        """Which job this is, for log lines and summaries."""
        return {"version": self.version, "lane": self.lane, "epoch": self.epoch}

    def parameters(self) -> dict[str, Any]:
        """The bind parameters that fence a statement on this lane (see lanes.py)."""
        return {
            "l_version": self.version,
            "l_lane": self.lane,
            "l_epoch": self.epoch,
            "l_run_epoch": self.run_epoch,
        }

    def count(self, size: int, cursor: Any) -> None:
        """Count a committed batch of `size` keys or rows, after which the lane is at `cursor`."""
        self.cursor = cursor
        self.processed += size
        self.rows += size
        self.batches += 1

    def summary(self, outcome: str, **extra: Any) -> dict[str, Any]:
        """What the chunk job returns (and Flower shows)."""
        elapsed = time.monotonic() - self.started
        return {
            "outcome": outcome,
            **self.ids,
            "batches": self.batches,
            "rows": self.rows,
            "processed": self.processed,
            "total": self.total,
            "seconds": round(elapsed, 3),
            **extra,
        }
