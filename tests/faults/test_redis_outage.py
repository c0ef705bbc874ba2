"""Redis down for the deploy hook, and Redis restarted empty in the middle of a backfill."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from data_tasks.settings import Settings
from tests.faults.harness import (
    ROWS,
    SLOW,
    backfill,
    exactly_once,
    fault_settings,
    hook_ok,
    private_redis,
    queued_messages,
    record,
    settle,
    status,
    sweep_until,
    untouched,
)
from tests.faults.ledger import FaultCase
from tests.processes import REPO, WorkerProcess, environment, run_hook

pytestmark = pytest.mark.e2e

KILLS_DURING_HOOK = 3
RESTARTS_MID_RUN = 2


class Beyond:
    """True of a record that has processed more than a number of rows."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __call__(self, found: dict[str, Any]) -> bool:
        """Compare."""
        return int(found.get("processed") or 0) > self.rows


def test_a_hook_without_redis_fails_in_one_line_and_claims_nothing(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "Redis down for the deploy hook (1 time), or killed while the hook runs (3 times)"
    )
    rng = random.Random()
    with private_redis(tmp_path) as server:
        settings = fault_settings(pg_settings).with_(redis_url=server.url)
        backfill(settings, postgres_engine)

        faults.inject("Redis down", SLOW)
        server.kill()
        result = run_hook(settings)
        assert result.returncode == 4, result
        [line] = result.stderr.splitlines()
        assert (
            line.startswith("error: Redis unreachable at redis://127.0.0.1:")
            and str(server.port) in line
        ), line
        assert status(postgres_engine, SLOW) in (None, "pending")

        # Redis dies while hooks run: whatever a hook managed, the next one leaves exactly
        # one job in the queue for the record's epoch.
        for _ in range(KILLS_DURING_HOOK):
            server.start()
            hook = subprocess.Popen(
                [sys.executable, "-m", "deploy_hooks.enqueue"],
                env=environment(settings),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            settle(rng.uniform(0.2, 1.5))
            faults.inject("Redis killed during the hook", SLOW)
            server.kill()
            _, err = hook.communicate(timeout=60)
            assert hook.returncode in (0, 4), err
            assert hook.returncode == 0 or len(err.splitlines()) == 1, err
            server.start()
            hook_ok(settings)
            client = redis.Redis.from_url(server.url)
            jobs = queued_messages(client)
            client.close()
            assert [(job["version"], job["epoch"]) for job in jobs] == [
                (SLOW, record(postgres_engine, SLOW)["epoch"])
            ]
            assert record(postgres_engine, SLOW)["status"] == "enqueued"
            server.kill()
        untouched(postgres_engine)

        server.start()
        hook_ok(settings)
        workers.append(WorkerProcess(settings, tmp_path).wait_ready())
        sweep_until(settings, postgres_engine, SLOW)
    exactly_once(postgres_engine)


def test_redis_restarted_empty_mid_run_then_the_sweep_resumes_at_the_cursor(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "Redis restarted empty in the middle of a backfill (queue, locks and markers lost)"
    )
    with private_redis(tmp_path) as server:
        settings = fault_settings(pg_settings).with_(redis_url=server.url)
        backfill(settings, postgres_engine)
        hook_ok(settings)
        workers.append(WorkerProcess(settings, tmp_path).wait_ready())
        for restart in range(RESTARTS_MID_RUN):
            # While Redis was away, a job or a run may have been lost: the sweep finds it.
            sweep_until(settings, postgres_engine, SLOW, Beyond(20_000 * (restart + 1)))
            # The queue, the locks and the queued markers are lost with it.
            faults.inject("Redis restarted empty", SLOW)
            server.kill()
            settle(0.5)
            server.start()
        sweep_until(settings, postgres_engine, SLOW)
    assert record(postgres_engine, SLOW)["processed"] == ROWS
    exactly_once(postgres_engine)
