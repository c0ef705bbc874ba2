"""Callbacks told when a task succeeds, fails, is paused or cancelled, after the change commits.

history.py decides when a notice is sent (after its change commits, and again by the sweep
when the process that made it died first); this module runs the callbacks. A callback that
raises is logged in one line and never breaks the runner or the command.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable

from data_tasks.data_task import NOTIFIED_STATUSES, Callback, Notice, declared_task
from data_tasks.log import first_line, log_event

__all__ = ["NOTIFIED_STATUSES", "Notice", "dispatch", "global_callbacks"]

# The setting naming the callbacks run for every task: "module:function" comma-separated.
NOTIFY_VARIABLE = "DATA_TASKS_NOTIFY"
# The callbacks of the last value of the setting, loaded once.
_loaded: tuple[str, list[Callback]] = ("", [])


def global_callbacks() -> list[Callback]:
    """The callables DATA_TASKS_NOTIFY names; one that cannot be imported is logged and left out."""
    global _loaded
    spec = os.environ.get(NOTIFY_VARIABLE, "").strip()
    if spec != _loaded[0]:
        _loaded = (spec, [c for c in (_import(name) for name in spec.split(",")) if c])
    return _loaded[1]


def _import(name: str) -> Callback | None:
    name = name.strip()
    if not name:
        return None
    module, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module), attribute) if attribute else None
    except Exception as error:
        log_event("notify_setting_invalid", logging.WARNING, callback=name, error=first_line(error))
        return None
    if not callable(found):
        reason = "name module:function, a callable"
        log_event("notify_setting_invalid", logging.WARNING, callback=name, error=reason)
        return None
    return found  # type: ignore[no-any-return]


def dispatch(notice: Notice) -> bool:
    """Run the task's own callbacks for the status, then the global ones; never raises.

    True when every callback returned; False when one raised (the others still ran).
    """
    task = declared_task(notice.version)
    callbacks = list(task.callbacks.get(notice.status, [])) if task is not None else []
    results = [_call(callback, notice) for callback in callbacks + global_callbacks()]
    return all(results)


def _call(callback: Callable[[Notice], object], notice: Notice) -> bool:
    try:
        callback(notice)
        return True
    except Exception as error:
        # The change is committed; a failing webhook must not turn it into a failure.
        log_event(
            "notify_failed",
            logging.WARNING,
            version=notice.version,
            status=notice.status,
            callback=getattr(callback, "__qualname__", repr(callback)),
            error=f"{type(error).__name__}: {first_line(error)}",
        )
        return False
