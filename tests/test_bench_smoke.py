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
        "keyset_fixed_vs_loop",
        "keyset_fixed_vs_loop_remote",
        "keyset_fixed_flushed_vs_loop",
        "keyset_default_vs_loop",
        "keyset_update_vs_loop",
        "keyset_default_vs_update",
        "keyset_default_vs_procedure",
        "keyset_round_trips",
        "keyset_wal",
        "keyset_lock_waits",
        "rows_vs_loop",
        "rows_round_trips",
        "rows_wal",
        "rows_lock_waits",
        "hook_vs_imports",
        "hook_pending_vs_imports",
        "hook_queries",
        "hook_round_trips",
        "small_tasks_overhead",
        "memory_growth",
        "adaptive_vs_fixed",
        "scale_out",
    } <= keys
    positive = [f for f in document["figures"] if f["unit"] not in ("s", "round trips")]
    assert all(figure["value"] > 0 for figure in positive)
    # Every runner and loop run was counted on the wire: at least BEGIN, a statement, COMMIT.
    for shape in ("keyset", "rows"):
        [trips] = [f for f in document["figures"] if f["key"] == f"{shape}_round_trips"]
        assert all(cost["round_trips_per_batch"] >= 3 for cost in trips["detail"]["costs"].values())
    [run] = document["runs"].values()
    assert run["command"].startswith("python -m bench --quick")
    assert (tmp_path / "results.png").stat().st_size > 10_000
