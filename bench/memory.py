"""Memory: a worker's peak RSS over a small and a ten times larger keyset backfill."""

from __future__ import annotations

from bench.config import Config
from bench.data import create_users, keyset_source, run_data_task
from bench.figures import Figure, median
from bench.services import Services


def peak_rss(services: Services, rows: int, config: Config) -> int:
    """Bytes: the highest RSS of a fresh worker's pool process over one backfill."""
    create_users(services.engine, rows)
    with services.worker(concurrency=1) as worker:
        run_data_task(services, "bench_memory", keyset_source(config.keyset_batch), config.timeout)
        return worker.peak_rss_bytes()


def run(services: Services, config: Config, known: dict[int, list[int]]) -> list[Figure]:
    """Peak RSS of both sizes (reusing peaks another benchmark measured), and their ratio."""
    small, large = config.memory_rows
    peaks = {rows: list(known.get(rows, [])) for rows in (small, large)}
    for rows in (small, large):
        while len(peaks[rows]) < config.repetitions:
            peaks[rows].append(peak_rss(services, rows, config))
    services.clear_tasks()
    small_peak, large_peak = median(peaks[small]), median(peaks[large])
    mib = 1024 * 1024
    return [
        Figure(
            "memory_growth",
            f"worker peak RSS, keyset backfill of {large:,} vs {small:,} rows",
            large_peak / small_peak,
            "x memory",
            1.10,
            "max",
            f"{small_peak / mib:.1f} MiB -> {large_peak / mib:.1f} MiB",
            [],
            {"peak_rss_bytes": {str(rows): values for rows, values in peaks.items()}},
        )
    ]
