"""SIGSTOP a runner past its lease, let another take over, SIGCONT it: the epoch fences it off."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy import Engine

from data_tasks.settings import Settings
from tests.faults.harness import (
    SLOW,
    backfill,
    exactly_once,
    fault_settings,
    hook_ok,
    log_lines,
    record,
    sweep_until,
    wait_progress,
    wait_reclaimable,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.processes import WorkerProcess, wait_for

pytestmark = pytest.mark.e2e


def chunk_ends(log: str) -> list[str]:
    """The lines where Celery reports a chunk job returned or raised."""
    return [
        line
        for line in log_lines(log, "Task data_tasks.run_chunk[")
        if " succeeded in " in line or " raised " in line
    ]


def test_a_revived_runner_cannot_commit(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "SIGSTOP past the lease at a random point, then another worker takes over, then SIGCONT"
    )
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    hook_ok(settings)
    paused = WorkerProcess(settings, tmp_path)
    workers.append(paused)
    paused.wait_ready()
    wait_progress(postgres_engine, SLOW, 20_000)

    faults.inject("SIGSTOP", SLOW)
    paused.signal(signal.SIGSTOP, whole_group=True)
    frozen = record(postgres_engine, SLOW)
    chunks_ended = len(chunk_ends(paused.log()))
    # Frozen between two chunks, the worker may hold no job at all: nothing to revive.
    holding_a_job = len(log_lines(paused.log(), "] received")) > chunks_ended
    if frozen["lane_status"] == "running":
        wait_reclaimable(settings, postgres_engine, SLOW)
        # Frozen inside a batch, it holds its lane's row until the server ends its idle
        # transaction (batch_idle_seconds): until then the sweep skips the lane, never waits.
        wait_for(lambda: "reclaimed" in hook_ok(settings), timeout=30, interval=0.5)
    # (Frozen between two chunks, its successor job is already queued for the next worker.)
    workers.append(WorkerProcess(settings, tmp_path).wait_ready())
    sweep_until(settings, postgres_engine, SLOW)
    done = record(postgres_engine, SLOW)

    paused.signal(signal.SIGCONT, whole_group=True)
    if holding_a_job:
        wait_for(lambda: len(chunk_ends(paused.log())) > chunks_ended)
    if frozen["lane_status"] == "running":
        # Frozen inside a batch, the server ended its session (idle in transaction) and
        # rolled the batch back; frozen between batches, its compare-and-set was refused.
        old = f"version={SLOW} lane=0 epoch={frozen['epoch']}"
        assert log_lines(paused.log(), old, "event=fenced") or log_lines(
            paused.log(), old, "event=batch_failed"
        )
    assert record(postgres_engine, SLOW) == done
    exactly_once(postgres_engine)


def test_a_runner_paused_between_batches_is_fenced_by_its_epoch(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "SIGSTOP between batches; the successor holds the same cursor, so only the epoch can "
        "fence the revived runner"
    )
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    hook_ok(settings)
    first_gate, second_gate = tmp_path / "gate1", tmp_path / "gate2"
    first_gate.mkdir()
    second_gate.mkdir()
    paused = WorkerProcess(settings, tmp_path, extra_env={"FAULTY_GATE_DIR": str(first_gate)})
    workers.append(paused)
    paused.wait_ready()
    # The chunk waits at the gate, between two batches, holding no transaction.
    wait_for(lambda: (first_gate / "waiting").exists())
    faults.inject("SIGSTOP between batches", SLOW)
    paused.signal(signal.SIGSTOP, whole_group=True)
    (first_gate / "go").touch()
    old_epoch = record(postgres_engine, SLOW)["epoch"]
    wait_reclaimable(settings, postgres_engine, SLOW)
    assert "reclaimed" in hook_ok(settings)

    # The successor claims the run and waits before its first batch: same cursor, newer epoch.
    gated = {"FAULTY_GATE_DIR": str(second_gate), "FAULTY_GATE_AT": "1"}
    workers.append(WorkerProcess(settings, tmp_path, extra_env=gated).wait_ready())
    wait_for(lambda: (second_gate / "waiting").exists())
    taken = record(postgres_engine, SLOW)
    assert taken["status"] == "running" and taken["epoch"] > old_epoch

    # Only the epoch tells the revived runner from the new one: the cursor is the same.
    paused.signal(signal.SIGCONT, whole_group=True)
    wait_for(
        lambda: log_lines(paused.log(), f"version={SLOW} lane=0 epoch={old_epoch}", "event=fenced")
    )
    assert record(postgres_engine, SLOW)["cursor"] == taken["cursor"]
    (second_gate / "go").touch()
    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    assert not log_lines(paused.log(), "event=batch_failed")
    exactly_once(postgres_engine)
