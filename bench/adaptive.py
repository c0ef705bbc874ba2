"""Adaptive batch size: the trace of batch sizes toward a target duration, and its throughput."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from bench.config import Config
from bench.data import create_users, keyset_source, require_filled, run_data_task
from bench.figures import Figure, median, ratios
from bench.services import Services, utc_now


def traced_run(services: Services, config: Config) -> tuple[float, list[dict[str, Any]]]:
    """Run the adaptive backfill, sampling its record; worker seconds and the batch-size trace."""
    version = services.next_version()
    source = keyset_source(config.keyset_batch, config.adaptive_target_seconds)
    services.write_task(version, "bench_adaptive", source)
    services.run_hook("--quiet")
    trace: list[dict[str, Any]] = []
    # The task's status and times, with its one lane's batch size and progress.
    query = text(
        "SELECT r.status, l.batch_size, l.processed, r.started_at, r.finished_at "
        "FROM task_records r JOIN task_lanes l ON l.version = r.version AND l.lane = 0 "
        "WHERE r.version = :v"
    )
    deadline = time.monotonic() + config.timeout
    while time.monotonic() < deadline:
        with services.engine.connect() as connection:
            found = connection.execute(query, {"v": version}).first()
        if found is None:  # the run's lane is not there yet
            time.sleep(0.01)
            continue
        status, size, processed, started, finished = found
        if started is not None and size is not None:
            seconds = ((finished or utc_now()) - started).total_seconds()
            if not trace or trace[-1]["processed"] != processed:
                trace.append({"seconds": seconds, "batch_size": size, "processed": processed})
        if status == "succeeded":
            return (finished - started).total_seconds(), trace
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"adaptive backfill {status}")
        time.sleep(0.01)
    raise TimeoutError("adaptive backfill did not finish")


def run(services: Services, config: Config) -> list[Figure]:
    """Adaptive against the fixed default size, alternating, on fresh tables."""
    rows = config.adaptive_rows
    fixed: list[float] = []
    adaptive: list[float] = []
    traces: list[list[dict[str, Any]]] = []
    with services.worker(concurrency=1):
        for repetition in range(config.repetitions):
            for mode in ("fixed", "adaptive") if repetition % 2 == 0 else ("adaptive", "fixed"):
                create_users(services.engine, rows)
                if mode == "fixed":
                    source = keyset_source(config.keyset_batch)
                    result = run_data_task(services, "bench_fixed", source, config.timeout)
                    fixed.append(result.worker_seconds)
                else:
                    seconds, trace = traced_run(services, config)
                    adaptive.append(seconds)
                    traces.append(trace)
                require_filled(services.engine, f"{mode} backfill")
            services.clear_tasks()
    speedup = ratios(fixed, adaptive)
    final = [trace[-1]["batch_size"] for trace in traces if trace]
    return [
        Figure(
            "adaptive_vs_fixed",
            f"adaptive batch size (target {config.adaptive_target_seconds:g} s) "
            f"vs fixed {config.keyset_batch:,}, {rows:,} rows",
            median(speedup),
            "x speed",
            None,
            "min",
            f"adaptive {rows / median(adaptive):,.0f} rows/s, "
            f"fixed {rows / median(fixed):,.0f} rows/s; last batch size {median(final):,.0f}",
            speedup,
            {
                "fixed_seconds": fixed,
                "adaptive_seconds": adaptive,
                "target_seconds": config.adaptive_target_seconds,
                "trace": traces[len(traces) // 2] if traces else [],
            },
        )
    ]
