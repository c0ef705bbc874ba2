"""`python -m bench.reliability LEDGER`: the README's reliability table, built from a fault ledger.

The ledger is the JSON lines file the fault suite writes when FAULT_LEDGER is set (one line per
test, see tests/faults/ledger.py). Only the text between the two marker comments in the README is
rewritten: the line saying which run the figures come from, and the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.markers import MarkerError, replace_between

REPO = Path(__file__).resolve().parent.parent
START = "<!-- reliability:start -->"
END = "<!-- reliability:end -->"
NUMBERS = ("tests", "passed", "in_flight", "outside", "rows", "twice", "lost")
FIELDS = ("case", "test", "passed", "in_flight", "outside", "rows", "twice", "lost")
HEADER = (
    "| fault | injected in flight | landed outside a run | rows checked | applied twice | lost "
    "| passed | reproduce |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"
)


class LedgerError(MarkerError):
    """A ledger or README this script cannot use; the message is the one line to print."""


@dataclass
class Case:
    """One row of the table: the ledger lines of one case (a parametrized test has many)."""

    name: str
    test_file: str
    function: str
    # The parametrization ids of its tests ("rows" of "test_x[rows]"), if any.
    params: set[str] = field(default_factory=set)
    tests: int = 0
    passed: int = 0
    in_flight: int = 0
    outside: int = 0
    rows: int = 0
    twice: int = 0
    lost: int = 0

    def add(self, line: dict[str, Any]) -> None:
        """Count one test's line in."""
        self.tests += 1
        self.passed += bool(line["passed"])
        self.in_flight += int(line["in_flight"])
        self.outside += int(line["outside"])
        self.rows += int(line["rows"])
        self.twice += int(line["twice"])
        self.lost += int(line["lost"])


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The ledger's lines, each checked for the fields the table needs."""
    try:
        text = path.read_text()
    except OSError as error:
        raise LedgerError(f"cannot read the ledger {path}: {error.strerror}") from None
    lines: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as error:
            raise LedgerError(f"{path}:{number}: not JSON ({error.msg})") from None
        missing = [name for name in FIELDS if not isinstance(line, dict) or name not in line]
        if missing:
            raise LedgerError(f"{path}:{number}: missing {', '.join(missing)}")
        lines.append(line)
    if not lines:
        raise LedgerError(f"{path}: no ledger lines (was FAULT_LEDGER set for the run?)")
    return lines


def cases(lines: Sequence[dict[str, Any]]) -> list[Case]:
    """The lines grouped by case, in the order the run met them."""
    found: dict[str, Case] = {}
    for line in lines:
        test_file, _, test = str(line["test"]).partition("::")
        function, _, param = test.partition("[")
        case = found.setdefault(line["case"], Case(line["case"], test_file, function))
        if param:
            case.params.add(param.rstrip("]"))
        case.add(line)
    return list(found.values())


def reproduce(case: Case, every: Sequence[Case]) -> str:
    """The command that runs the case alone: its file, with `-k` when the file has others, or
    the one parametrized test when its function's other parameters are other cases."""
    others = [other for other in every if other.test_file == case.test_file and other is not case]
    if len(case.params) == 1 and any(other.function == case.function for other in others):
        return f"`pytest '{case.test_file}::{case.function}[{next(iter(case.params))}]'`"
    select = f" -k {case.function}" if others else ""
    return f"`pytest {case.test_file}{select}`"


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def duration(seconds: float) -> str:
    """`6 min 27 s`."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def render(lines: Sequence[dict[str, Any]], seconds: float | None = None) -> str:
    """The line about the run and the table, as markdown (`seconds`: the run's wall time)."""
    grouped = cases(lines)
    if seconds is None:
        # Without the make target's own timing, the span the ledger lines cover.
        seconds = max(float(x.get("finished", 0)) for x in lines) - min(
            float(x.get("started", 0)) for x in lines
        )
    finished = max(float(x.get("finished", 0)) for x in lines)
    day = datetime.fromtimestamp(finished, UTC).strftime("%Y-%m-%d")
    cores = max(int(x.get("cores") or 0) for x in lines)
    tests = sum(case.tests for case in grouped)
    about = (
        f"Generated by `make reliability` from the run of {day}: {len(grouped)} cases, "
        f"{tests} tests, {duration(seconds)} on {cores} cores. A fault counts as in flight when "
        "the task's progress read 0 < processed < total at the moment it was injected."
    )
    rows = [about, "", HEADER]
    for case in grouped:
        passed = "yes" if case.passed == case.tests else f"no ({case.passed} of {case.tests})"
        rows.append(
            f"| {cell(case.name)} | {case.in_flight} | {case.outside} | {case.rows:,} "
            f"| {case.twice:,} | {case.lost:,} | {passed} | {reproduce(case, grouped)} |"
        )
    total = {name: sum(getattr(c, name) for c in grouped) for name in NUMBERS}
    rows.append(
        f"| **total** | **{total['in_flight']}** | **{total['outside']}** "
        f"| **{total['rows']:,}** | **{total['twice']:,}** | **{total['lost']:,}** "
        f"| **{total['passed']} of {total['tests']}** | `pytest tests/faults` |"
    )
    return "\n".join(rows) + "\n"


def rewrite(readme: str, table: str) -> str:
    """The README with only the text between the markers replaced by `table`."""
    return replace_between(readme, START, END, table)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    parser.add_argument("ledger", type=Path, help="the JSON lines file FAULT_LEDGER pointed at")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md", help="rewritten here")
    parser.add_argument("--seconds", type=float, help="the run's wall time, when measured")
    parser.add_argument("--stdout", action="store_true", help="print the table, write nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Render the table; rewrite the README (or print). Exit 2 with one line on bad input."""
    args = parse(argv)
    try:
        table = render(read_ledger(args.ledger), args.seconds)
        if args.stdout:
            sys.stdout.write(table)
            return 0
        try:
            readme = args.readme.read_text()
        except OSError as error:
            raise LedgerError(f"cannot read {args.readme}: {error.strerror}") from None
        args.readme.write_text(rewrite(readme, table))
    except MarkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote the reliability table of {args.ledger} into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
