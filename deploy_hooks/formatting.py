"""How the operator commands show data tasks: bars, the status table, one record whole."""

from __future__ import annotations

import json
from collections.abc import Sequence

from data_tasks.data_task import Progress
from data_tasks.lanes import lane_line
from data_tasks.overview import TaskView


def bar(progress: Progress, width: int = 20, live: bool = True) -> str:
    """A text bar with processed/total, and the rate and ETA while it runs."""
    percent = progress.percent
    if percent is None:
        shown = " " * width
        amount = f"{progress.processed}"
    else:
        filled = round(width * percent / 100)
        shown = "#" * filled + "." * (width - filled)
        about = "~" if progress.total_estimated else ""
        amount = f"{progress.processed}/{about}{progress.total} {percent:5.1f}%"
    extra = ""
    if live and progress.rows_per_second:
        extra = f" {progress.rows_per_second:,.0f}/s"
        if progress.eta_seconds is not None:
            extra += f" eta {format_seconds(progress.eta_seconds)}"
    return f"[{shown}] {amount}{extra}"


def progress_bar(view: TaskView, width: int = 20) -> str:
    """The bar of one task; rate and ETA only while it is queued or running."""
    return bar(view.progress, width, live=view.record.state.is_in_flight)


def format_seconds(seconds: float) -> str:
    """12s, 3m04s, 2h05m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def note(view: TaskView, statuses: dict[str, str]) -> str:
    """What a person should know about a task beyond its status: waits, errors, a lost file."""
    record = view.record
    text = ""
    if view.waiting_on:
        text = "waiting on " + ", ".join(
            f"{dep} ({statuses[dep]})" if statuses.get(dep) in ("failed", "cancelled") else dep
            for dep in view.waiting_on
        )
    elif record.last_error and not record.state.is_done:
        text = record.last_error.splitlines()[0][:100]
    if not view.has_file:
        text = ("no task file; " + text).strip("; ")
    return text


def format_table(views: Sequence[TaskView]) -> str:
    """The status table a person reads."""
    if not views:
        return "no data tasks"
    statuses = {view.record.version: view.record.status for view in views}
    rows = [("VERSION", "NAME", "STATUS", "PROGRESS", "TRIES", "NOTE")]
    for view in views:
        record = view.record
        rows.append(
            (
                record.version,
                record.name,
                record.status,
                progress_bar(view),
                str(record.attempts),
                note(view, statuses),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        (
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[-1]
        ).rstrip()
        for row in rows
    )


def format_record(view: TaskView) -> str:
    """Every field of one record, one per line, then the full traceback."""
    fields = view.as_dict()
    traceback = fields.pop("traceback", None)
    fields["progress"] = progress_bar(view)
    fields["waiting_on"] = ", ".join(view.waiting_on) or None
    lanes = fields.pop("lanes")
    if len(lanes) == 1:
        fields.update(cursor=lanes[0]["cursor"], upper=lanes[0]["upper"])
    elif lanes:
        fields["lanes"] = "\n" + "\n".join(lane_line(lane) for lane in view.lanes)
    order = ["version", "name", "status", "progress", "waiting_on", "epoch", "cursor", "upper"]
    keys = order + [key for key in fields if key not in order]
    width = max(len(key) for key in keys)
    lines = []
    for key in keys:
        value = fields.get(key)
        if value is None or value == "":
            value = "-"
        elif isinstance(value, float):
            value = f"{value:,.1f}"
        elif not isinstance(value, str):
            value = json.dumps(value)
        lines.append(f"{key.ljust(width)}  {value}")
    lines.append("traceback:" if traceback else "traceback: -")
    if traceback:
        lines.append(str(traceback).rstrip())
    return "\n".join(lines)
