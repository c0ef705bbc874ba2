"""The table printed, the machine the figures were measured on, and the plot the README shows."""

from __future__ import annotations

import itertools
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.figures import Figure


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def verdict(figure: Figure) -> str:
    """met / NOT met / -."""
    met = figure.met
    return "-" if met is None else ("met" if met else "NOT met")


def table(figures: Sequence[Figure]) -> str:
    """A plain-text table: what, the median figure, the target, whether met, absolute numbers."""
    rows = [("benchmark", "median", "target", "", "absolute")]
    for figure in figures:
        rows.append(
            (
                figure.label,
                f"{figure.value:.2f} {figure.unit}",
                figure.target_text(),
                verdict(figure),
                figure.absolute,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[4]
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(line.rstrip() for line in lines)


# Inches per bar of a ratio panel, and the height of the lower row of panels.
BAR_INCHES = 0.55
LOWER_INCHES = 4.75


def plot(path: Path, figures: Sequence[Figure]) -> None:
    """Four panels: speed ratios, cost ratios, the adaptive trace, many small tasks."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a build machine
    import matplotlib.pyplot as plt

    by_key = {figure.key: figure for figure in figures}
    speed = [f for f in figures if f.unit == "x speed"]
    cost = [f for f in figures if f.unit in ("x time", "x memory", "x queries")]
    # The ratio panels grow with their bars, so that the two-line labels never overlap.
    top = BAR_INCHES * max(len(speed), len(cost), 8)
    fig, axes = plt.subplots(
        2, 2, figsize=(14, top + LOWER_INCHES), height_ratios=[top, LOWER_INCHES]
    )
    _ratio_panel(axes[0][0], speed, "Speed against the baseline (higher is better)")
    _ratio_panel(axes[0][1], cost, "Cost against the baseline (lower is better)")
    _adaptive_panel(axes[1][0], by_key.get("adaptive_vs_fixed"))
    _small_tasks_panel(axes[1][1], by_key.get("small_tasks_overhead"))
    fig.suptitle("Deferred data tasks: medians of repeated runs, each against its own baseline")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


SHORT = {
    "keyset_fixed_vs_loop": "keyset backfill, 1,000 per batch\nvs hand-written loop",
    "keyset_fixed_vs_loop_remote": "the same, the database\n0.5 ms away",
    "keyset_fixed_flushed_vs_loop": "the same, each COMMIT\nwaiting for the disk",
    "keyset_default_vs_loop": "keyset backfill, default size\nvs hand-written loop",
    "keyset_update_vs_loop": "one UPDATE of the table\nvs hand-written loop (limit)",
    "keyset_default_vs_update": "keyset backfill, default size\nvs one UPDATE of the table",
    "keyset_default_vs_procedure": "keyset backfill, default size\nvs PL/pgSQL procedure",
    "rows_vs_loop": "row iteration\nvs hand-written loop",
    "adaptive_vs_fixed": "adaptive batch size\nvs fixed 1,000",
    "scale_out": "2 worker processes vs 1\n(sharded, CPU-bound)",
    "hook_vs_imports": "deploy hook, nothing new, vs\nimport celery, sqlalchemy, redis",
    "hook_pending_vs_imports": "deploy hook, 10 to publish, vs\nimport celery, sqlalchemy, redis",
    "hook_queries": "deploy hook queries,\n100 -> 1,000 files",
    "size_loop_rows_per_second": "hand-written loop, 20,000,000\nvs 1,000,000 rows: rows/s",
    "memory_growth": "worker peak RSS,\n1,000,000 vs 100,000 rows",
}


def _short(figure: Figure) -> str:
    return SHORT.get(figure.key, figure.label.replace(": ", ":\n", 1))


def _ratio_panel(axis: Any, figures: Sequence[Figure], title: str) -> None:
    axis.set_title(title, fontsize=11)
    if not figures:
        axis.set_axis_off()
        return
    names = [_short(f) for f in figures][::-1]
    values = [f.value for f in figures][::-1]
    colours = [
        "#4c72b0" if f.met is None else ("#55a868" if f.met else "#c44e52") for f in figures
    ][::-1]
    bars = axis.barh(names, values, color=colours)
    for bar, figure in zip(bars, figures[::-1], strict=True):
        axis.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {figure.value:.2f}",
            va="center",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )
        if figure.target is not None:
            y = bar.get_y()
            axis.plot([figure.target] * 2, [y - 0.05, y + bar.get_height() + 0.05], "k--", lw=1.2)
    axis.axvline(1.0, color="grey", lw=0.8)
    axis.set_xlim(0, max([*values, *(f.target or 0 for f in figures)]) * 1.25)
    axis.tick_params(axis="y", labelsize=9)
    axis.set_xlabel("ratio; dashed: target (green met, red not met, blue: no target)", fontsize=9)


def _adaptive_panel(axis: Any, figure: Figure | None) -> None:
    axis.set_title("Adaptive batch size converging on its target duration", fontsize=11)
    if figure is None or not figure.detail.get("trace"):
        axis.set_axis_off()
        return
    trace = figure.detail["trace"]
    target = figure.detail["target_seconds"]
    seconds = [point["seconds"] for point in trace]
    sizes = [point["batch_size"] for point in trace]
    axis.step(seconds, sizes, where="post", color="#4c72b0", label="keys per batch")
    axis.set_xlabel("seconds since the run started")
    axis.set_ylabel("keys per batch", color="#4c72b0")
    axis.grid(alpha=0.3)
    # A batch's duration: the time between the samples around it (taken every 10 ms); the
    # record holds the size of the batch that committed last.
    durations = [
        (b["seconds"], b["seconds"] - a["seconds"])
        for a, b in itertools.pairwise(trace)
        if b["processed"] - a["processed"] == b["batch_size"]
    ]
    if durations:
        twin = axis.twinx()
        twin.plot(*zip(*durations, strict=True), ".", color="#dd8452", label="batch seconds")
        twin.axhline(target, color="#dd8452", ls="--", lw=1)
        twin.set_ylabel("seconds per batch (dashed: target)", color="#dd8452")
        twin.set_ylim(0, target * 2.5)
    axis.text(
        0.98,
        0.05,
        f"target {target:g} s per batch; {figure.value:.2f}x the speed of fixed batches",
        transform=axis.transAxes,
        ha="right",
        va="bottom",
        fontsize=9,
    )


def _small_tasks_panel(axis: Any, figure: Figure | None) -> None:
    axis.set_title("Many small tasks end to end (2 worker processes)", fontsize=11)
    if figure is None:
        axis.set_axis_off()
        return
    from statistics import median

    ours = median(figure.detail["data_task_seconds"])
    empty = median(figure.detail["empty_job_seconds"])
    bars = axis.bar(
        ["empty Celery jobs", "one-shot data tasks"],
        [empty, ours],
        width=0.5,
        color=["#8c8c8c", "#4c72b0"],
    )
    for bar, value in zip(bars, [empty, ours], strict=True):
        axis.text(
            bar.get_x() + bar.get_width() / 2,
            value,
            f"{value:.2f} s",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    axis.set_ylabel(f"seconds for {figure.detail['tasks']} tasks")
    axis.text(
        0.02,
        0.95,
        f"overhead {figure.value:.1f} ms per task",
        transform=axis.transAxes,
        va="top",
        fontsize=9,
    )
