"""The fault ledger: where each injected fault landed in the run, and what the data says at the end.

A fault counts as "in flight" only when, at the moment it is injected, the task's progress reads
0 < processed < total. Every other injection (before the run started, after it ended, or with no
run at all) is still recorded, as "landed outside a run", so that nothing is hidden.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from tests.faults.harness import record
from tests.items import applied_counts


@dataclass(frozen=True)
class Injection:
    """One fault, and the progress the task showed at the moment it was injected."""

    fault: str
    processed: int | None
    total: int | None

    @property
    def in_flight(self) -> bool:
        """True when it hit work in progress: 0 < processed < total, strictly."""
        return in_flight(self.processed, self.total)


def in_flight(processed: int | None, total: int | None) -> bool:
    """Whether a progress reading is strictly inside a run (a None total: not started)."""
    return processed is not None and total is not None and 0 < processed < total


def progress(engine: Engine, *versions: str) -> tuple[int | None, int | None]:
    """The summed processed and total of the versions' records (None where one has none)."""
    found = [record(engine, version) for version in versions]
    processed = [r.get("processed") for r in found]
    totals = [r.get("total") for r in found]
    return (
        None if None in processed else sum(int(p) for p in processed if p is not None),
        None if None in totals else sum(int(t) for t in totals if t is not None),
    )


def measured_counts(engine: Engine) -> dict[int, int]:
    """How many rows were applied 0, 1, 2... times; empty when the table is not there (yet)."""
    try:
        return applied_counts(engine)
    except DBAPIError:
        # A case that failed before creating its rows has nothing to count.
        return {}


@dataclass
class FaultCase:
    """The faults one test injects, where each landed, and the rows it checks at the end."""

    engine: Engine
    test: str
    case: str = ""
    expected: int = 1
    injections: list[Injection] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def describe(self, case: str, expected: int = 1) -> None:
        """Name the case for the table; `expected` is each row's count (0: must change nothing)."""
        self.case, self.expected = case, expected

    def inject(self, fault: str, *versions: str) -> bool:
        """Note a fault the test injects now; returns whether it hit the versions' run in flight.

        Call it right where the fault is injected: it reads the progress at that moment.
        """
        processed, total = progress(self.engine, *versions)
        injection = Injection(fault, processed, total)
        self.injections.append(injection)
        return injection.in_flight

    def line(self, passed: bool) -> dict[str, Any]:
        """The ledger line: the injections, and the doubled and lost rows measured from the data."""
        counts = measured_counts(self.engine)
        return {
            "case": self.case,
            "test": self.test,
            "passed": passed,
            "in_flight": sum(i.in_flight for i in self.injections),
            "outside": sum(not i.in_flight for i in self.injections),
            "rows": sum(counts.values()),
            "twice": sum(n for applied, n in counts.items() if applied > self.expected),
            "lost": sum(n for applied, n in counts.items() if applied < self.expected),
            "expected": self.expected,
            "counts": {str(applied): n for applied, n in sorted(counts.items())},
            "injections": [asdict(i) | {"in_flight": i.in_flight} for i in self.injections],
            "started": self.started,
            "finished": time.time(),
            "cores": os.cpu_count(),
        }

    def write(self, path: Path, passed: bool) -> None:
        """Append the ledger line to `path` (JSON lines)."""
        with path.open("a") as out:
            out.write(json.dumps(self.line(passed)) + "\n")


def ledger_path(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where $FAULT_LEDGER points, None when it is not set."""
    value = environ.get("FAULT_LEDGER")
    return Path(value) if value else None
