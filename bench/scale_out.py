"""Scale-out: one CPU-bound row iteration in two parallel shards, on one and on two processes."""

from __future__ import annotations

from bench.config import Config
from bench.data import create_users, require_filled, rows_source, run_data_task
from bench.figures import Figure, median, ratios
from bench.services import Services

SHARDS = 2


def timed(services: Services, config: Config, processes: int) -> float:
    """Seconds from the deploy hook to success, with a fresh worker of `processes` processes."""
    create_users(services.engine, config.scale_rows)
    source = rows_source(config.rows_batch // 10, rounds=config.scale_rounds, parallel=SHARDS)
    with services.worker(concurrency=processes):
        result = run_data_task(services, "bench_scale_out", source, config.timeout)
    require_filled(services.engine, "the sharded row iteration")
    return result.seconds


def run(services: Services, config: Config) -> list[Figure]:
    """The speed-up of two worker processes over one, alternating which runs first."""
    one: list[float] = []
    two: list[float] = []
    for repetition in range(config.repetitions):
        pair = [(1, one), (2, two)]
        for processes, samples in pair if repetition % 2 == 0 else pair[::-1]:
            samples.append(timed(services, config, processes))
        services.clear_tasks()
    speedup = ratios(one, two)
    return [
        Figure(
            "scale_out",
            f"CPU-bound row iteration, {config.scale_rows:,} rows in {SHARDS} shards: "
            "2 worker processes vs 1",
            median(speedup),
            "x speed",
            1.6,
            "min",
            f"1 process {median(one):.2f} s, 2 processes {median(two):.2f} s",
            speedup,
            {"one_process_seconds": one, "two_process_seconds": two, "shards": SHARDS},
        )
    ]
