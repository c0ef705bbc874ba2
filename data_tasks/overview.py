"""What `status` shows: each record with its progress, rate, ETA and what it waits on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from data_tasks.data_task import Progress
from data_tasks.discovery import discover, load
from data_tasks.errors import DataTaskError
from data_tasks.records import TaskRecord, create_tables, load_all
from data_tasks.scheduler import dependencies, waiting_on
from data_tasks.status import Status


@dataclass(frozen=True)
class TaskView:
    """One data task as an operator sees it."""

    record: TaskRecord
    progress: Progress
    waiting_on: tuple[str, ...]
    has_file: bool

    def as_dict(self) -> dict[str, Any]:
        """Every record field plus the derived ones, JSON-ready."""
        return {
            **self.record.as_dict(),
            "percent": self.progress.percent,
            "rows_per_second": self.progress.rows_per_second,
            "eta_seconds": self.progress.eta_seconds,
            "waiting_on": list(self.waiting_on),
            "has_file": self.has_file,
        }


def progress_of(record: TaskRecord) -> Progress:
    """Processed, total and the average rate since the run started."""
    rate = None
    if record.started_at and record.heartbeat_at and record.processed:
        seconds = (record.heartbeat_at - record.started_at).total_seconds()
        if seconds > 0:
            rate = record.processed / seconds
    return Progress(processed=record.processed, total=record.total, rows_per_second=rate)


def overview(engine: Engine, tasks_dir: Path) -> list[TaskView]:
    """Every record (and every task file not yet recorded, as pending), in version order."""
    create_tables(engine)
    with Session(engine) as session:
        records = load_all(session)
    try:
        files = {task_file.version: task_file for task_file in discover(tasks_dir)}
    except DataTaskError:
        files = {}
    for version, task_file in files.items():
        if version not in records:
            records[version] = TaskRecord(
                version=version,
                name=task_file.name,
                status=Status.PENDING.value,
                epoch=0,
                processed=0,
                attempts=0,
            )
    statuses = {version: record.state for version, record in records.items()}
    explicit: dict[str, tuple[str, ...] | None] = {}
    for version, status in statuses.items():
        if not status.is_done and version in files:
            try:
                explicit[version] = load(files[version]).depends_on
            except DataTaskError:
                explicit[version] = None
    try:
        deps = dependencies(records, explicit)
    except DataTaskError:
        deps = dependencies(records, {})
    return [
        TaskView(
            record=record,
            progress=progress_of(record),
            waiting_on=tuple(waiting_on(version, deps, statuses))
            if record.state in (Status.PENDING, Status.FAILED)
            else (),
            has_file=version in files,
        )
        for version, record in sorted(records.items())
    ]
