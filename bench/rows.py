"""Row iteration: a Python-side transform of each row, written back, against the same by hand."""

from __future__ import annotations

from bench.config import Config
from bench.data import (
    count_unfilled,
    create_users,
    rows_source,
    run_data_task,
)
from bench.figures import Figure, median, ratios
from bench.services import Services


def run(services: Services, config: Config) -> list[Figure]:
    """Time both on fresh tables, alternating which goes first, and quote the median ratio."""
    rows, batch = config.rows_rows, config.rows_batch
    times: dict[str, list[float]] = {"loop": [], "loop_only": [], "runner": [], "worker": []}
    with services.worker(concurrency=1):
        for repetition in range(config.repetitions):
            order = ["loop", "runner"] if repetition % 2 == 0 else ["runner", "loop"]
            for method in order:
                create_users(services.engine, rows)
                if method == "loop":
                    wall, inner = services.run_loop("rows", batch)
                    times["loop"].append(wall)
                    times["loop_only"].append(inner)
                else:
                    result = run_data_task(
                        services, "bench_rows", rows_source(batch), config.timeout
                    )
                    times["runner"].append(result.seconds)
                    times["worker"].append(result.worker_seconds)
                unfilled = count_unfilled(services.engine)
                if unfilled:
                    raise RuntimeError(f"row iteration {method} left {unfilled} rows unfilled")
            services.clear_tasks()
    medians = {name: median(samples) for name, samples in times.items()}
    vs_loop = ratios(times["loop"], times["runner"])
    batches_only = median(ratios(times["loop_only"], times["worker"]))
    return [
        Figure(
            "rows_vs_loop",
            f"row iteration, {rows:,} rows: runner vs hand-written loop",
            median(vs_loop),
            "x speed",
            0.85,
            "min",
            f"runner {medians['runner']:.2f} s ({rows / medians['runner']:,.0f} rows/s), "
            f"loop {medians['loop']:.2f} s; batches alone: worker {medians['worker']:.2f} s, "
            f"loop {medians['loop_only']:.2f} s ({batches_only:.2f}x)",
            vs_loop,
            {
                "rows": rows,
                "batch_size": batch,
                "seconds": times,
                "median_seconds": medians,
                "worker_only_ratio": batches_only,
            },
        )
    ]
