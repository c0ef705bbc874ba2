"""Keyset backfill: the runner against the hand-written loop and the in-database procedure.

The runner is timed from the deploy hook's start to the record's finish; the loop as a script,
from its start to its exit; both start a Python process. The batches alone are compared too.
"""

from __future__ import annotations

import time

from sqlalchemy import text

from bench.config import Config
from bench.data import count_unfilled, create_users, keyset_source, run_data_task
from bench.figures import Figure, median, ratios
from bench.services import Services

PROCEDURE = """
CREATE OR REPLACE PROCEDURE bench_backfill(batch bigint) LANGUAGE plpgsql AS $$
DECLARE
    lo bigint := 0;
    top bigint;
BEGIN
    SELECT max(id) INTO top FROM users;
    WHILE lo < top LOOP
        UPDATE users SET email_normalized = lower(email) WHERE id > lo AND id <= lo + batch;
        COMMIT;
        lo := lo + batch;
    END LOOP;
END $$
"""


def procedure(services: Services, batch: int) -> float:
    """The same loop inside PostgreSQL: no client round trips at all, the limit."""
    engine = services.autocommit_engine()
    try:
        with engine.connect() as connection:
            connection.execute(text(PROCEDURE))
            began = time.monotonic()
            connection.execute(text("CALL bench_backfill(:batch)"), {"batch": batch})
            return time.monotonic() - began
    finally:
        engine.dispose()


def run(services: Services, config: Config) -> list[Figure]:
    """Time the three ways over fresh tables, in rotating order, and quote medians."""
    rows, batch = config.keyset_rows, config.keyset_batch
    names = ("loop", "loop_only", "procedure", "runner", "worker")
    times: dict[str, list[float]] = {name: [] for name in names}
    peaks: list[int] = []
    methods = ["loop", "runner", "procedure"]
    for repetition in range(config.repetitions):
        # Rotated, so that a slow spell of the machine does not always hit the same method.
        for method in methods[repetition % 3 :] + methods[: repetition % 3]:
            create_users(services.engine, rows)
            if method == "loop":
                wall, inner = services.run_loop("keyset", batch)
                times["loop"].append(wall)
                times["loop_only"].append(inner)
            elif method == "procedure":
                times["procedure"].append(procedure(services, batch))
            else:
                # A fresh worker per run, so its peak memory belongs to this run alone.
                with services.worker(concurrency=1) as worker:
                    result = run_data_task(
                        services, "bench_keyset", keyset_source(batch), config.timeout
                    )
                    peaks.append(worker.peak_rss_bytes())
                times["runner"].append(result.seconds)
                times["worker"].append(result.worker_seconds)
            unfilled = count_unfilled(services.engine)
            if unfilled:
                raise RuntimeError(f"keyset {method} left {unfilled} rows unfilled")
        services.clear_tasks()
    medians = {name: median(samples) for name, samples in times.items()}
    detail = {"rows": rows, "batch_size": batch, "seconds": times, "median_seconds": medians}
    per_second = rows / medians["runner"]
    vs_loop = ratios(times["loop"], times["runner"])
    vs_procedure = ratios(times["procedure"], times["runner"])
    worker_vs_loop = ratios(times["loop_only"], times["worker"])
    return [
        Figure(
            "keyset_vs_loop",
            f"keyset backfill, {rows:,} rows: runner vs hand-written loop",
            median(vs_loop),
            "x speed",
            0.90,
            "min",
            f"runner {medians['runner']:.2f} s ({per_second:,.0f} rows/s), "
            f"loop {medians['loop']:.2f} s; batches alone: worker {medians['worker']:.2f} s, "
            f"loop {medians['loop_only']:.2f} s ({median(worker_vs_loop):.2f}x)",
            vs_loop,
            {**detail, "worker_only_ratio": median(worker_vs_loop), "peak_rss_bytes": peaks},
        ),
        Figure(
            "keyset_vs_procedure",
            f"keyset backfill, {rows:,} rows: runner vs PL/pgSQL procedure",
            median(vs_procedure),
            "x speed",
            None,
            "min",
            f"procedure {medians['procedure']:.2f} s",
            vs_procedure,
            detail,
        ),
    ]
