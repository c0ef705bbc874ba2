"""The figures every runner comparison quotes: speed, round trips per batch, WAL and lock waits."""

from __future__ import annotations

from typing import Any

from bench.figures import Figure, median
from bench.methods import Sample, ratio_pairs, seconds


def speed(
    key: str,
    label: str,
    samples: dict[str, list[Sample]],
    of: str,
    against: str,
    target: float | None,
    detail: dict[str, Any],
) -> Figure:
    """A speed figure: per-round ratios of `against`'s seconds over `of`'s, and their median."""
    per_round = ratio_pairs(samples[against], samples[of])
    mine, theirs = median(seconds(samples[of])), median(seconds(samples[against]))
    rows = detail["rows"]
    return Figure(
        key,
        label,
        median(per_round),
        "x speed",
        target,
        "min",
        f"{of} {mine:.2f} s ({rows / mine:,.0f} rows/s), {against} {theirs:.2f} s",
        per_round,
        detail,
    )


def round_trips(shape: str, head: str, cost: dict[str, dict[str, Any]], runner_name: str) -> Figure:
    """Round trips per batch: the runner's minus the hand-written loop's (target: one more)."""
    runner, loop = cost[runner_name], cost["loop"]
    return Figure(
        f"{shape}_round_trips",
        f"{head}: round trips per batch, runner minus hand-written loop",
        runner["round_trips_per_batch"] - loop["round_trips_per_batch"],
        "round trips",
        1.0,
        "max",
        f"runner {runner['round_trips_per_batch']:.2f}, loop {loop['round_trips_per_batch']:.2f} "
        "per batch (counted on the wire, the connection's start included)",
        [],
        {"costs": cost},
    )


def cost_figures(
    shape: str, head: str, cost: dict[str, dict[str, Any]], runner_name: str
) -> list[Figure]:
    """WAL bytes and lock waits per 1,000,000 rows, the runner's against the loop's."""
    wal = {name: found["wal_bytes_per_million_rows"] for name, found in cost.items()}
    whole = any(found["wal_scope"] != "database" for found in cost.values())
    scope = " (the whole server's: pg_walinspect missing)" if whole else ""
    locks = {name: found["lock_wait_seconds_per_million_rows"] for name, found in cost.items()}
    mib = 1024 * 1024
    return [
        Figure(
            f"{shape}_wal",
            f"{head}: WAL per 1,000,000 rows{scope}, runner vs hand-written loop",
            wal[runner_name] / max(1.0, wal["loop"]),
            "x WAL",
            None,
            "max",
            ", ".join(f"{name} {value / mib:,.0f} MiB" for name, value in wal.items()),
            [],
            {"wal_bytes_per_million_rows": wal},
        ),
        Figure(
            f"{shape}_lock_waits",
            f"{head}: seconds waiting on locks per 1,000,000 rows (sampled every 10 ms)",
            locks[runner_name],
            "s",
            None,
            "max",
            ", ".join(f"{name} {value:.2f} s" for name, value in locks.items()),
            [],
            {"lock_wait_seconds_per_million_rows": locks},
        ),
    ]
