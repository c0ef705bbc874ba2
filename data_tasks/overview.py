"""What `status` shows: each record with its progress, rate, ETA and what it waits on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from data_tasks.cursors import cursor_json
from data_tasks.data_task import Progress
from data_tasks.discovery import discover, load
from data_tasks.errors import DataTaskError
from data_tasks.lanes import TaskLane, lanes_of
from data_tasks.records import TaskRecord, load_all
from data_tasks.scheduler import dependencies, waiting_on
from data_tasks.schema import create_tables
from data_tasks.status import Status


@dataclass(frozen=True)
class TaskView:
    """One data task as an operator sees it."""

    record: TaskRecord
    progress: Progress
    waiting_on: tuple[str, ...]
    has_file: bool
    # The lanes of its latest run, in order (none before it first started).
    lanes: tuple[TaskLane, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Every record field plus the derived ones, JSON-ready."""
        return {
            **self.record.as_dict(),
            "percent": self.progress.percent,
            "rows_per_second": self.progress.rows_per_second,
            "eta_seconds": self.progress.eta_seconds,
            "processed": self.progress.processed,
            "total": self.progress.total,
            "total_estimated": self.progress.total_estimated,
            "waiting_on": list(self.waiting_on),
            "has_file": self.has_file,
            # Where the next batch starts, for a task that runs as one lane.
            "cursor": cursor_json(self.lanes[0].cursor) if len(self.lanes) == 1 else None,
            "lanes": [lane.as_dict() for lane in self.lanes],
        }


def progress_of(record: TaskRecord, lanes: Sequence[TaskLane] = ()) -> Progress:
    """Processed, total and the average rate since the run started, summed over the lanes."""
    processed, total, beat = record.processed, record.total, record.heartbeat_at
    estimated = False
    if lanes:
        processed = sum(lane.processed for lane in lanes)
        totals = [lane.total for lane in lanes]
        total = None if None in totals else sum(t or 0 for t in totals)
        estimated = total is not None and any(lane.total_estimated for lane in lanes)
        beats = [lane.heartbeat_at for lane in lanes if lane.heartbeat_at is not None]
        beat = max(beats, default=beat)
    rate = None
    if record.started_at and beat and processed:
        seconds = (beat - record.started_at).total_seconds()
        if seconds > 0:
            rate = processed / seconds
    return Progress(
        processed=processed, total=total, rows_per_second=rate, total_estimated=estimated
    )


def overview(engine: Engine, tasks_dirs: Path | Sequence[Path]) -> list[TaskView]:
    """Every record (and every task file not yet recorded, as pending), in version order."""
    create_tables(engine)
    with Session(engine) as session:
        records = load_all(session)
    try:
        files = {task_file.version: task_file for task_file in discover(tasks_dirs)}
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
    lanes = lanes_of(engine, records)
    return [
        TaskView(
            record=record,
            progress=progress_of(record, lanes.get(version, ())),
            lanes=tuple(lanes.get(version, ())),
            waiting_on=tuple(waiting_on(version, deps, statuses))
            if record.state in (Status.PENDING, Status.FAILED)
            else (),
            has_file=version in files,
        )
        for version, record in sorted(records.items())
    ]
