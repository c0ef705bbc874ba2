"""Flat with size (`make bench-scale`): the same backfills at 1,000,000 and 20,000,000 rows.

For the keyset backfill and the row iteration, each at the task's default batch size and with a
fresh worker per run: the time from the deploy hook's spawn to the first committed batch (the
first time the lane's progress reads above zero, polled every 5 ms), rows per second from
then to finished_at, and the worker's peak RSS. Each figure is the large size's
median over the small size's. The hand-written keyset loop runs at both sizes too: its rows per
second show how much the database itself slows down on the larger table (checkpoints, a
table larger than shared_buffers), whoever writes to it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from sqlalchemy import text

from bench.config import Config
from bench.data import create_users, keyset_source, require_filled, rows_source
from bench.figures import Figure, median
from bench.services import Services, utc_now

FIRST_BATCH = text("SELECT coalesce(max(processed), 0) > 0 FROM task_lanes WHERE version = :v")
POLL_SECONDS = 0.005


def one_run(services: Services, shape: str, rows: int, timeout: float) -> dict[str, float]:
    """Deploy the backfill on a fresh table of `rows` rows; its three measures."""
    source = keyset_source(None) if shape == "keyset" else rows_source(None)
    create_users(services.engine, rows)
    with services.worker(concurrency=1) as worker:
        version = services.next_version()
        services.write_task(version, f"bench_size_{shape}", source)
        began, began_at = time.monotonic(), utc_now()
        hook = services.start_hook("--quiet")
        first = None
        deadline = began + timeout
        with services.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            while first is None and time.monotonic() < deadline:
                if connection.execute(FIRST_BATCH, {"v": version}).scalar_one():
                    first = time.monotonic() - began
                else:
                    time.sleep(POLL_SECONDS)
        if hook.wait(timeout=120) != 0 or first is None:
            raise RuntimeError(f"{shape} at {rows:,} rows did not start (hook {hook.returncode})")
        _, finished = services.wait_succeeded([version], timeout)
        seconds = (finished - began_at).total_seconds()
        peak = worker.peak_rss_bytes()
    require_filled(services.engine, f"{shape} at {rows:,} rows")
    services.clear_tasks()
    # From the first batch on: the start, quoted on its own above, would flatter the large run.
    per_second = rows / (seconds - first)
    return {"first_batch_seconds": first, "rows_per_second": per_second, "peak_rss": peak}


def run(services: Services, config: Config) -> list[Figure]:
    """Both shapes at both sizes (smaller first in each pair), then the large/small ratios."""
    small, large = config.size_rows
    figures: list[Figure] = []
    for shape in ("keyset", "rows"):
        found: dict[int, list[dict[str, float]]] = {small: [], large: []}
        for _ in range(config.size_repetitions):
            for rows in (small, large):
                print(f"  {shape} at {rows:,} rows ...", file=sys.stderr, flush=True)
                found[rows].append(one_run(services, shape, rows, config.size_timeout))
        figures += ratios(shape, small, large, found)
    figures.append(loop_speed(services, config))
    return figures


def loop_speed(services: Services, config: Config) -> Figure:
    """The hand-written loop's rows per second on the large table over the small one's."""
    small, large = config.size_rows
    batch = config.keyset_batch
    speeds: dict[int, list[float]] = {small: [], large: []}
    for _ in range(config.size_repetitions):
        for rows in (small, large):
            print(f"  hand-written loop at {rows:,} rows ...", file=sys.stderr, flush=True)
            create_users(services.engine, rows)
            _, connected = services.run_loop("keyset", batch)
            require_filled(services.engine, f"the loop at {rows:,} rows")
            speeds[rows].append(rows / connected)
    a, b = median(speeds[small]), median(speeds[large])
    return Figure(
        "size_loop_rows_per_second",
        f"hand-written loop at {batch:,} keys, {large:,} vs {small:,} rows: rows per second (the "
        "database's own slowdown on the larger table)",
        b / a,
        "x speed",
        None,
        "min",
        f"{a:,.0f} -> {b:,.0f} rows/s",
        [],
        {"rows_per_second": {str(rows): found for rows, found in speeds.items()}},
    )


def ratios(
    shape: str, small: int, large: int, found: dict[int, list[dict[str, float]]]
) -> list[Figure]:
    """Three figures of one shape: time to first batch, rows per second, peak RSS."""
    label = "keyset backfill" if shape == "keyset" else "row iteration"
    mid = {rows: {k: median([r[k] for r in runs]) for k in runs[0]} for rows, runs in found.items()}
    a, b = mid[small], mid[large]
    detail: dict[str, Any] = {"runs": {str(rows): runs for rows, runs in found.items()}}
    sizes = f"{large:,} vs {small:,} rows"
    mib = 1024 * 1024
    return [
        Figure(
            f"size_{shape}_first_batch",
            f"{label}, {sizes}: time from the deploy hook to the first committed batch",
            b["first_batch_seconds"] / a["first_batch_seconds"],
            "x time",
            1.1,
            "max",
            f"{a['first_batch_seconds']:.2f} s -> {b['first_batch_seconds']:.2f} s",
            [],
            detail,
        ),
        Figure(
            f"size_{shape}_rows_per_second",
            f"{label}, {sizes}: rows per second",
            b["rows_per_second"] / a["rows_per_second"],
            "x speed",
            0.9,
            "min",
            f"{a['rows_per_second']:,.0f} -> {b['rows_per_second']:,.0f} rows/s",
            [],
            detail,
        ),
        Figure(
            f"size_{shape}_peak_rss",
            f"{label}, {sizes}: worker peak RSS",
            b["peak_rss"] / a["peak_rss"],
            "x memory",
            1.1,
            "max",
            f"{a['peak_rss'] / mib:.1f} MiB -> {b['peak_rss'] / mib:.1f} MiB",
            [],
            detail,
        ),
    ]
