"""A benchmark's result: a ratio against a baseline from the same run, with its raw samples."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def median(samples: Sequence[float]) -> float:
    """The median, the figure quoted everywhere (robust to a neighbour's noisy test run)."""
    return float(statistics.median(samples))


@dataclass
class Figure:
    """One row of the table: a ratio, its baseline, and whether it meets its target."""

    key: str
    label: str
    value: float
    unit: str
    # "min": the value must be at least the target; "max": at most.
    target: float | None = None
    direction: str = "min"
    absolute: str = ""
    samples: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """True when the target is met, None when the figure has no target."""
        if self.target is None:
            return None
        if self.direction == "min":
            return self.value >= self.target
        return self.value <= self.target

    def target_text(self) -> str:
        """`>= 0.90`, `<= 1.50`, or a dash."""
        if self.target is None:
            return "-"
        return f"{'>=' if self.direction == 'min' else '<='} {self.target:g}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "met": self.met}


def ratios(baseline: Sequence[float], measured: Sequence[float]) -> list[float]:
    """Per-repetition baseline/measured time ratios (1.0: as fast as the baseline)."""
    return [b / m for b, m in zip(baseline, measured, strict=True)]
