"""One tiny run of every benchmark, so the benchmark code keeps working. Nothing here is timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from bench.__main__ import main
from bench.services import REDIS_URL
from tests.services import unavailable

pytestmark = pytest.mark.e2e


def test_every_benchmark_runs_and_writes_its_results(postgres_url: str, tmp_path: Path) -> None:
    # Skip (or fail under CI) when PostgreSQL (the fixture) or Redis is missing. The benchmark
    # keeps to a queue and keys of its own, so it never flushes a database others may use.
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        unavailable("Redis", error)
    finally:
        client.close()
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
        "scale_out",
    } <= keys
    assert all(figure["value"] > 0 for figure in document["figures"])
    assert (tmp_path / "results.png").stat().st_size > 10_000
    assert "| benchmark |" in (tmp_path / "results.md").read_text()
