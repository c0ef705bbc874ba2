"""Keyset backfill: the runner, fixed and at its default batch size, against four baselines.

The baselines: the hand-written SQLAlchemy loop at the same batch size, the same loop in a
PL/pgSQL procedure (no round trips, the limit of any client-side batching) and one UPDATE of the
whole table (no batching at all, the limit of any batching). All five run in a process of their
own (see bench.methods), interleaved, on a fresh table each. The runner at a fixed size and the
loop also run with the database a network hop away (bench.proxy holding each answer back).
"""

from __future__ import annotations

from typing import Any

from bench import costs
from bench.comparisons import cost_figures, round_trips, speed
from bench.config import Config
from bench.data import keyset_source
from bench.figures import Figure
from bench.methods import (
    Sample,
    baseline,
    baseline_cost,
    batches,
    interleaved,
    runner,
    runner_cost,
    seconds,
)
from bench.proxy import CountingProxy
from bench.services import Services


def methods(services: Services, config: Config) -> dict[str, Any]:
    """Each method, ready to run on a fresh table."""
    batch, timeout = config.keyset_batch, config.timeout
    return {
        "loop": lambda: baseline(services, "keyset", batch),
        "runner_fixed": lambda: runner(services, "bench_keyset", keyset_source(batch), timeout),
        # The same, each batch's COMMIT waiting for the disk as the loop's does.
        "runner_fixed_flushed": lambda: runner(
            services, "bench_keyset", keyset_source(batch), timeout, **FLUSHED
        ),
        # No batch_size: whatever the task's default is on this code.
        "runner_default": lambda: runner(services, "bench_keyset", keyset_source(None), timeout),
        "procedure": lambda: baseline(services, "procedure", batch),
        "update": lambda: baseline(services, "update", batch),
    }


# The runner with its batches committed as the server commits everything else (here:
# synchronous_commit on), instead of its default "off".
FLUSHED = {"DATA_TASKS_BATCH_SYNCHRONOUS_COMMIT": ""}
# How far the database is in the remote runs: a round trip within one cloud region takes
# about half a millisecond.
LATENCY_SECONDS = 0.0005


def remote(services: Services, config: Config) -> dict[str, list[Sample]]:
    """The runner at a fixed size and the loop, every connection LATENCY_SECONDS away."""
    batch, timeout = config.keyset_batch, config.timeout
    host, port = services.address()
    with CountingProxy(host, port, latency=LATENCY_SECONDS) as proxy:
        url = services.url_through(proxy.port)
        methods = {
            "loop": lambda: baseline(services, "keyset", batch, DATABASE_URL=url),
            "runner_fixed": lambda: runner(
                services, "bench_keyset", keyset_source(batch), timeout, DATABASE_URL=url
            ),
        }
        return interleaved(services, config.keyset_rows, methods, config.repetitions, config.warmup)


def cost_of(services: Services, config: Config, method: str) -> costs.Cost:
    """One untimed run of the fixed-size runner or the loop through the counting proxy."""
    rows, batch = config.keyset_rows, config.keyset_batch
    known = batches(rows, batch)
    if method == "runner_fixed":
        source = keyset_source(batch)
        return runner_cost(services, rows, known, "bench_keyset", source, config.timeout)
    return baseline_cost(services, rows, known, "keyset", batch)


def run(services: Services, config: Config) -> list[Figure]:
    """Time the five methods, then measure the costs of each, and quote the figures."""
    rows, batch = config.keyset_rows, config.keyset_batch
    samples = interleaved(
        services, rows, methods(services, config), config.repetitions, config.warmup
    )
    # Round trips and lock waits of the runner and the loop, in runs of their own.
    cost = {name: cost_of(services, config, name).as_dict() for name in ("runner_fixed", "loop")}
    detail: dict[str, Any] = {
        "rows": rows,
        "batch_size": batch,
        "seconds": {name: seconds(found) for name, found in samples.items()},
        "inner_seconds": {name: [s.inner for s in found] for name, found in samples.items()},
        "peak_rss_bytes": [s.peak_rss_bytes for s in samples["runner_fixed"]],
        "costs": cost,
    }
    head = f"keyset backfill, {rows:,} rows"
    fixed, default = "runner_fixed", "runner_default"
    figures = [
        speed(
            "keyset_fixed_vs_loop",
            f"{head}: runner at {batch:,} keys per batch vs hand-written loop at {batch:,} "
            "(the runner's batch COMMIT does not wait for the disk, the loop's does)",
            samples,
            fixed,
            "loop",
            0.95,
            detail,
        ),
        speed(
            "keyset_fixed_flushed_vs_loop",
            f"{head}: runner at {batch:,} keys per batch, each COMMIT waiting for the disk as the "
            f"loop's does (batch_synchronous_commit '' instead of 'off'), vs the loop at {batch:,}",
            samples,
            "runner_fixed_flushed",
            "loop",
            None,
            detail,
        ),
        speed(
            "keyset_default_vs_loop",
            f"{head}: runner at its default batch size vs hand-written loop at {batch:,}",
            samples,
            default,
            "loop",
            1.2,
            detail,
        ),
        # The limit of the line above: batches of any size beat the loop by at most this.
        speed(
            "keyset_update_vs_loop",
            f"{head}: one UPDATE of the whole table vs hand-written loop at {batch:,} (how far "
            "any batching can beat the loop: the default's limit)",
            samples,
            "update",
            "loop",
            None,
            detail,
        ),
        speed(
            "keyset_default_vs_update",
            f"{head}: runner at its default batch size vs one UPDATE of the whole table (limit)",
            samples,
            default,
            "update",
            0.9,
            detail,
        ),
        speed(
            "keyset_default_vs_procedure",
            f"{head}: runner at its default batch size vs PL/pgSQL procedure at {batch:,} (limit)",
            samples,
            default,
            "procedure",
            None,
            detail,
        ),
    ]
    far = remote(services, config)
    away = {
        "rows": rows,
        "batch_size": batch,
        "latency_seconds": LATENCY_SECONDS,
        "seconds": {name: seconds(found) for name, found in far.items()},
    }
    figures.append(
        speed(
            "keyset_fixed_vs_loop_remote",
            f"{head}, the database {LATENCY_SECONDS * 1000:.1f} ms away: runner at {batch:,} "
            f"keys per batch vs hand-written loop at {batch:,}",
            far,
            fixed,
            "loop",
            None,
            away,
        )
    )
    figures.append(round_trips("keyset", f"{head}, {batch:,} keys per batch", cost, fixed))
    figures += cost_figures("keyset", head, cost, fixed)
    return figures
