"""The README's performance table is generated from bench/results.json, never typed by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.figures import Figure
from bench.markers import between
from bench.results import merge
from bench.table import END, START, render
from tests.processes import REPO

RUN = {
    "started": "2026-11-30T10:00:00+00:00",
    "command": "python -m bench",
    "seconds": 754,
    "scenarios": ["keyset"],
    "machine": {"cpus": 2, "cpu_model": "AMD EPYC", "memory_gib": 23.5, "python": "3.11.7"},
    "config": {"repetitions": 5, "warmup": 1, "size_repetitions": 1},
}


def figure(key: str, value: float, target: float | None = 0.95) -> Figure:
    """A speed figure as a benchmark makes one."""
    return Figure(key, f"{key} | label", value, "x speed", target, "min", f"{key} 1.00 s")


def test_the_readme_table_is_what_the_generator_makes_from_results_json() -> None:
    document = json.loads((REPO / "bench" / "results.json").read_text())
    readme = (REPO / "README.md").read_text()
    assert between(readme, START, END) == render(document), (
        "the README's performance table differs from bench/results.json: "
        "run `python -m bench.table` (make bench does)"
    )


def test_a_run_replaces_its_own_figures_and_keeps_the_others() -> None:
    document: dict[str, Any] = {"runs": {}, "figures": []}
    merge(document, RUN, [figure("a", 1.0), figure("b", 0.5)])
    later = {
        **RUN,
        "started": "2026-12-01T10:00:00+00:00",
        "command": "python -m bench --only size",
        "scenarios": ["size"],
    }
    merge(document, later, [figure("b", 0.97, None)])

    assert [(f["key"], f["value"], f["run"]) for f in document["figures"]] == [
        ("a", 1.0, RUN["started"]),
        ("b", 0.97, later["started"]),
    ]
    table = render(document)
    assert "Generated from `python -m bench` of 2026-11-30: 12 min 34 s on 2 cores" in table
    assert "Generated from `python -m bench --only size` of 2026-12-01" in table
    assert "each figure compares the medians of 1 run(s) a size." in table
    assert "the median of 5 interleaved rounds after 1 discarded warm-up round(s)." in table
    assert "| a \\| label | 1.00 x speed | >= 0.95 | met | a 1.00 s |" in table
    assert "| b \\| label | 0.97 x speed | - | - | b 1.00 s |" in table
    # A run whose figures were all replaced is no longer listed.
    merge(document, later, [figure("a", 0.5)])
    assert list(document["runs"]) == [later["started"]]
    assert "| a \\| label | 0.50 x speed | >= 0.95 | **not met** |" in render(document)


def test_the_script_rewrites_only_the_text_between_the_markers(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    document: dict[str, Any] = {"runs": {}, "figures": []}
    merge(document, RUN, [figure("a", 1.0)])
    results.write_text(json.dumps(document))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{START}\nold table\n{END}\nText after.\n")

    command = [sys.executable, "-m", "bench.table", "--results", str(results)]
    done = subprocess.run(
        [*command, "--readme", str(readme)], cwd=REPO, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert readme.read_text() == f"# Title\n\n{START}\n{render(document)}{END}\nText after.\n"
    readme.write_text("no markers\n")
    refused = subprocess.run(
        [*command, "--readme", str(readme)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: the README needs one <!-- performance:start -->")
    assert readme.read_text() == "no markers\n"
