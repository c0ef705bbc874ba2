"""One tiny run of every benchmark, so the benchmark code keeps working. Nothing here is timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.services import REDIS_URL
from tests.services import flushed_redis

pytestmark = pytest.mark.e2e


def test_every_benchmark_runs_and_writes_its_results(postgres_url: str, tmp_path: Path) -> None:
    # The fixtures skip (or fail under CI) when PostgreSQL or Redis is missing.
    flushed_redis(REDIS_URL).close()
    assert main(["--quick", "--out", str(tmp_path)]) == 0

    document = json.loads((tmp_path / "results.json").read_text())
    keys = {figure["key"] for figure in document["figures"]}
    assert {
        "keyset_vs_loop",
        "keyset_vs_procedure",
        "rows_vs_loop",
        "hook_vs_imports",
        "hook_queries",
        "hook_round_trips",
        "small_tasks_overhead",
        "memory_growth",
        "adaptive_vs_fixed",
    } <= keys
    assert all(figure["value"] > 0 for figure in document["figures"])
    assert (tmp_path / "results.png").stat().st_size > 10_000
    assert "| benchmark |" in (tmp_path / "results.md").read_text()
