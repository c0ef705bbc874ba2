"""Sizes and repetitions of a benchmark run: the full one, and a tiny one that tests use."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Config:
    """How big each benchmark is and how often it is repeated."""

    repetitions: int = 5
    # Rounds of every comparison run first and thrown away.
    warmup: int = 1
    keyset_rows: int = 1_000_000
    keyset_batch: int = 1000
    rows_rows: int = 200_000
    rows_batch: int = 1000
    hook_files: int = 1000
    hook_pending: int = 10
    hook_repetitions: int = 9
    small_tasks: int = 500
    memory_rows: tuple[int, int] = (100_000, 1_000_000)
    adaptive_rows: int = 400_000
    adaptive_target_seconds: float = 0.05
    scale_rows: int = 20_000
    scale_rounds: int = 3000
    # `make bench-scale`: the same backfills at a small and a large size.
    size_rows: tuple[int, int] = (1_000_000, 20_000_000)
    size_repetitions: int = 1
    size_timeout: float = 3600.0
    # No single wait may take longer than this.
    timeout: float = 600.0

    def with_(self, **changes: Any) -> Config:
        """A copy with some values changed."""
        return replace(self, **changes)


FULL = Config()
# Seconds, not minutes: enough to run every code path of every benchmark once.
QUICK = Config(
    repetitions=1,
    warmup=0,
    keyset_rows=3000,
    keyset_batch=500,
    rows_rows=2000,
    rows_batch=500,
    hook_files=30,
    hook_pending=3,
    hook_repetitions=1,
    small_tasks=6,
    memory_rows=(1000, 3000),
    adaptive_rows=5000,
    adaptive_target_seconds=0.02,
    scale_rows=400,
    scale_rounds=10,
    size_rows=(2000, 6000),
    size_timeout=60.0,
    timeout=60.0,
)
