"""Row iteration: a Python-side transform of each row, written back, against the same by hand."""

from __future__ import annotations

from bench.comparisons import cost_figures, round_trips, speed
from bench.config import Config
from bench.data import rows_source
from bench.figures import Figure
from bench.methods import baseline, baseline_cost, batches, interleaved, runner, runner_cost
from bench.methods import seconds as seconds_of
from bench.services import Services


def run(services: Services, config: Config) -> list[Figure]:
    """Time both, a fresh worker for every runner run, then measure the costs of each."""
    rows, batch, timeout = config.rows_rows, config.rows_batch, config.timeout
    samples = interleaved(
        services,
        rows,
        {
            "loop": lambda: baseline(services, "rows", batch),
            "runner": lambda: runner(services, "bench_rows", rows_source(batch), timeout),
        },
        config.repetitions,
        config.warmup,
    )
    known = batches(rows, batch)
    cost = {
        "runner": runner_cost(
            services, rows, known, "bench_rows", rows_source(batch), timeout
        ).as_dict(),
        "loop": baseline_cost(services, rows, known, "rows", batch).as_dict(),
    }
    detail = {
        "rows": rows,
        "batch_size": batch,
        "seconds": {name: seconds_of(found) for name, found in samples.items()},
        "inner_seconds": {name: [s.inner for s in found] for name, found in samples.items()},
        "costs": cost,
    }
    head = f"row iteration, {rows:,} rows"
    return [
        speed(
            "rows_vs_loop",
            f"{head}: runner at {batch:,} rows per batch vs hand-written loop at {batch:,} "
            "(the runner's batch COMMIT does not wait for the disk, the loop's does)",
            samples,
            "runner",
            "loop",
            0.85,
            detail,
        ),
        round_trips("rows", f"{head}, {batch:,} rows per batch", cost, "runner"),
        *cost_figures("rows", head, cost, "runner"),
    ]
