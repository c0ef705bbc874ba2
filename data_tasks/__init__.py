"""Run-once data tasks after a deploy, in resumable batches on Celery workers."""

from data_tasks.data_task import Batch, DataTask, Options, Progress
from data_tasks.decorators import custom_batches, keyset_backfill, one_shot, row_iteration
from data_tasks.errors import (
    CheckFailed,
    DataTaskError,
    DependencyError,
    InvalidMessage,
    InvalidTaskFile,
    InvalidTransition,
    ServiceUnavailable,
    UnknownVersion,
)
from data_tasks.settings import Settings
from data_tasks.status import Status

__all__ = [
    "Batch",
    "CheckFailed",
    "DataTask",
    "DataTaskError",
    "DependencyError",
    "InvalidMessage",
    "InvalidTaskFile",
    "InvalidTransition",
    "Options",
    "Progress",
    "ServiceUnavailable",
    "Settings",
    "Status",
    "UnknownVersion",
    "custom_batches",
    "keyset_backfill",
    "one_shot",
    "row_iteration",
]
