"""Row iteration: a Python-side transform of each row, written back, against the same by hand."""

from __future__ import annotations

import time

from sqlalchemy import select

from bench.config import Config
from bench.data import (
    USERS,
    WRITE_BACK,
    count_unfilled,
    create_users,
    normalize,
    rows_source,
    run_data_task,
)
from bench.figures import Figure, median, ratios
from bench.services import Services


def hand_written(services: Services, batch: int) -> float:
    """Page by key, transform in Python, write back, commit: what a person writes."""
    query = select(USERS.c.id, USERS.c.email).order_by(USERS.c.id).limit(batch)
    began = time.monotonic()
    last = 0
    with services.engine.connect() as connection:
        while True:
            rows = connection.execute(query.where(USERS.c.id > last)).all()
            if not rows:
                break
            connection.execute(
                WRITE_BACK, [{"id": row.id, "value": normalize(row.email)} for row in rows]
            )
            connection.commit()
            last = rows[-1].id
    return time.monotonic() - began


def run(services: Services, config: Config) -> list[Figure]:
    """Time both on fresh tables, alternating which goes first, and quote the median ratio."""
    rows, batch = config.rows_rows, config.rows_batch
    times: dict[str, list[float]] = {"loop": [], "runner": [], "worker": []}
    with services.worker(concurrency=1):
        for repetition in range(config.repetitions):
            order = ["loop", "runner"] if repetition % 2 == 0 else ["runner", "loop"]
            for method in order:
                create_users(services.engine, rows)
                if method == "loop":
                    times["loop"].append(hand_written(services, batch))
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
    return [
        Figure(
            "rows_vs_loop",
            f"row iteration, {rows:,} rows: runner vs hand-written loop",
            median(vs_loop),
            "x speed",
            0.85,
            "min",
            f"runner {medians['runner']:.2f} s ({rows / medians['runner']:,.0f} rows/s), "
            f"loop {medians['loop']:.2f} s",
            vs_loop,
            {
                "rows": rows,
                "batch_size": batch,
                "seconds": times,
                "median_seconds": medians,
                "worker_only_ratio": median(ratios(times["loop"], times["worker"])),
            },
        )
    ]
