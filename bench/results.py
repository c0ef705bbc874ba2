"""bench/results.json: every figure with its samples, and the runs that measured them.

`make bench` and `make bench-scale` measure different figures; each run replaces the figures it
measured and keeps the others, so the file (and the README table made from it) holds the latest
figure of every benchmark, each saying which run it came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.figures import Figure


def read(path: Path) -> dict[str, Any]:
    """The document at `path`, or an empty one."""
    if not path.exists():
        return {"runs": {}, "figures": []}
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def merge(document: dict[str, Any], run: dict[str, Any], figures: Sequence[Figure]) -> None:
    """Put a run's figures in, replacing earlier figures of the same keys; drop unused runs."""
    run_id = str(run["started"])
    fresh = [{**figure.as_dict(), "run": run_id} for figure in figures]
    keys = {figure.key for figure in figures}
    kept = [figure for figure in document["figures"] if figure["key"] not in keys]
    document["figures"] = kept + fresh
    used = {figure["run"] for figure in document["figures"]}
    runs = {**document["runs"], run_id: run}
    document["runs"] = {key: value for key, value in runs.items() if key in used}


def write(path: Path, run: dict[str, Any], figures: Sequence[Figure]) -> dict[str, Any]:
    """Merge a run into the file at `path`; the merged document."""
    document = read(path)
    merge(document, run, figures)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return document


def figures_of(document: dict[str, Any]) -> list[Figure]:
    """The document's figures as objects (for the plot)."""
    names = Figure.__dataclass_fields__
    return [
        Figure(**{k: v for k, v in found.items() if k in names}) for found in document["figures"]
    ]
