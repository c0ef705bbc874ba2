"""The runner's own tables, created together."""

from __future__ import annotations

from sqlalchemy import Engine

from data_tasks.history import TaskHistory
from data_tasks.lanes import TaskLane
from data_tasks.records import Base, TaskRecord

TABLES = (TaskRecord.__table__, TaskLane.__table__, TaskHistory.__table__)


def create_tables(engine: Engine) -> None:
    """Create task_records, task_lanes and task_history if they are missing."""
    Base.metadata.create_all(engine, tables=list(TABLES))  # type: ignore[arg-type]
