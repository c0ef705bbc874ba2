"""`python -m deploy_hooks <command>`: the operator commands, a thin layer over data_tasks."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from data_tasks.database import make_engine
from data_tasks.errors import DataTaskError
from data_tasks.overview import TaskView, overview
from data_tasks.settings import Settings
from deploy_hooks.exit_codes import OK, USAGE, fail

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def progress_bar(view: TaskView, width: int = 20) -> str:
    """A text bar with processed/total, the rate and the ETA."""
    progress = view.progress
    percent = progress.percent
    if percent is None:
        bar = " " * width
        amount = f"{progress.processed}"
    else:
        filled = round(width * percent / 100)
        bar = "#" * filled + "." * (width - filled)
        amount = f"{progress.processed}/{progress.total} {percent:5.1f}%"
    extra = ""
    if progress.rows_per_second and view.record.state.is_in_flight:
        extra = f" {progress.rows_per_second:,.0f}/s"
        if progress.eta_seconds is not None:
            extra += f" eta {format_seconds(progress.eta_seconds)}"
    return f"[{bar}] {amount}{extra}"


def format_seconds(seconds: float) -> str:
    """12s, 3m04s, 2h05m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_table(views: Sequence[TaskView]) -> str:
    """The status table a person reads."""
    if not views:
        return "no data tasks"
    rows = [("VERSION", "NAME", "STATUS", "PROGRESS", "TRIES", "NOTE")]
    for view in views:
        record = view.record
        note = ""
        if view.waiting_on:
            note = "waiting on " + ", ".join(view.waiting_on)
        elif record.last_error:
            note = record.last_error.splitlines()[0][:80]
        if not view.has_file:
            note = ("no task file; " + note).strip("; ")
        rows.append(
            (
                record.version,
                record.name,
                record.status,
                progress_bar(view),
                str(record.attempts),
                note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ).rstrip()


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print every data task's record."""
    engine = make_engine(settings.database_url, connect_timeout=settings.connect_timeout_seconds)
    try:
        views = overview(engine, settings.tasks_dir)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([view.as_dict() for view in views], indent=2))
    else:
        print(format_table(views))
    return OK


def new_task_file(tasks_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Write a new task file from the template and return its path."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"name {name!r} must be snake_case: lower-case letters, digits, _")
    version = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    tasks_dir.mkdir(parents=True, exist_ok=True)
    path = tasks_dir / f"{version}_{name}.py"
    if path.exists():
        raise ValueError(f"{path} already exists")
    template = resources.files("data_tasks").joinpath("templates/task.py.tmpl").read_text()
    description = name.replace("_", " ").capitalize() + "."
    path.write_text(template.format(description=description, name=name, table="my_table"))
    return path


def cmd_new(settings: Settings, args: argparse.Namespace) -> int:
    """Write a new task file."""
    try:
        path = new_task_file(settings.tasks_dir, args.name)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
    print(f"created {path}")
    return OK


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m deploy_hooks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="show every data task's record")
    status.add_argument("--json", action="store_true", help="every record field, for scripts")
    status.set_defaults(handler=cmd_status)
    new = commands.add_parser("new", help="write a new task file from the template")
    new.add_argument("name", help="snake_case name of the data task")
    new.set_defaults(handler=cmd_new)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one operator command; domain errors become one line and an exit code here."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.handler(settings, args))
    except DataTaskError as error:
        return fail(error)
