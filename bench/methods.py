"""How every timed method runs: in a process of its own, interleaved with the others, warmed up.

A baseline (bench.loops) is timed from its process's spawn to its exit: Python's start, the
imports, the connection and the work. The runner is timed from the spawn of the deploy hook to
the finished_at its worker records, the worker being a fresh `celery worker` started (and
ready) before the hook, as a deployed worker is: so both pay for one Python start, the
imports and the connections; the runner is not charged its worker's start-up, nor its exit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.costs import Cost, Counted, measure
from bench.data import create_users, require_filled, run_data_task
from bench.services import Services


@dataclass(frozen=True)
class Sample:
    """One timed run of one method."""

    # Spawn to exit (a baseline), or the hook's spawn to finished_at (the runner).
    seconds: float
    # The baseline's time after connecting, or the worker's started_at to finished_at.
    inner: float
    # The worker's pool process peak RSS (the runner only).
    peak_rss_bytes: int = 0


def baseline(services: Services, kind: str, batch: int, **env: str) -> Sample:
    """A bench.loops baseline as a process of its own."""
    seconds, inner = services.run_loop(kind, batch, **env)
    return Sample(seconds, inner)


def runner(services: Services, name: str, source: str, timeout: float, **env: str) -> Sample:
    """One data task run by a fresh worker, started and ready before the deploy hook."""
    with services.worker(concurrency=1, **env) as worker:
        result = run_data_task(services, name, source, timeout, **env)
        peak = worker.peak_rss_bytes()
    return Sample(result.seconds, result.worker_seconds, peak)


def interleaved(
    services: Services,
    rows: int,
    methods: dict[str, Callable[[], Sample]],
    repetitions: int,
    warmup: int,
) -> dict[str, list[Sample]]:
    """Every method once per round on a fresh table, the order rotated from round to round.

    The first `warmup` rounds are run and thrown away: they fill the page cache and the
    bytecode cache, and start the server's processes, for every method alike. Rotating the
    order spreads a slow spell of a shared machine over all methods.
    """
    names = list(methods)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for round_number in range(warmup + repetitions):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            create_users(services.engine, rows)
            sample = methods[name]()
            require_filled(services.engine, f"{name} on {rows:,} rows")
            if round_number >= warmup:
                samples[name].append(sample)
        services.clear_tasks()
    return samples


def seconds(samples: Sequence[Sample]) -> list[float]:
    """The timed seconds of each run."""
    return [sample.seconds for sample in samples]


def ratio_pairs(baseline_samples: Sequence[Sample], measured: Sequence[Sample]) -> list[float]:
    """Per-round speed ratios: the baseline's seconds over the measured method's."""
    return [b.seconds / m.seconds for b, m in zip(baseline_samples, measured, strict=True)]


def batches(rows: int, batch: int) -> int:
    """How many batches of `batch` keys cover dense keys 1..rows."""
    return -(-rows // batch)


def runner_cost(
    services: Services, rows: int, known_batches: int | None, name: str, source: str, timeout: float
) -> Cost:
    """One untimed runner run on a fresh table, every worker connection through the proxy."""
    create_users(services.engine, rows)

    def run(counted: Counted) -> None:
        with services.worker(concurrency=1, DATABASE_URL=counted.url):
            counted.start()  # the worker's own start-up is not the run's cost
            run_data_task(services, name, source, timeout)

    cost = measure(services, rows, known_batches, run)
    services.clear_tasks()
    return cost


def baseline_cost(
    services: Services, rows: int, known_batches: int | None, kind: str, batch: int
) -> Cost:
    """One untimed baseline run on a fresh table, through the proxy."""
    create_users(services.engine, rows)

    def run(counted: Counted) -> None:
        services.run_loop(kind, batch, DATABASE_URL=counted.url)

    return measure(services, rows, known_batches, run)
