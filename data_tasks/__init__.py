"""Run-once data tasks after a deploy, in resumable batches on Celery workers.

The names below are imported on first use, not with the package: the deploy hook imports a few
light modules of it, and a deploy with nothing new never needs the ORM the decorators bring.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each public name, by the module that defines it.
_HOMES = {
    "data_task": ("Batch", "DataTask", "Options", "Progress"),
    "errors": (
        "CheckFailed",
        "DataTaskError",
        "DependencyError",
        "InvalidMessage",
        "InvalidTaskFile",
        "InvalidTransition",
        "ServiceUnavailable",
        "UnknownVersion",
    ),
    "settings": ("Settings",),
    "decorators": ("custom_batches", "keyset_backfill", "one_shot", "row_iteration"),
    "status": ("Status",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first asked for."""
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'data_tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"data_tasks.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names too, imported or not."""
    return sorted({*globals(), *__all__})


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
