"""The runtime of one worker process, built after the fork and kept for its life."""

from __future__ import annotations

import os
from typing import Any

from celery.worker import state as worker_state

from data_tasks.publisher import CeleryPublisher
from data_tasks.runtime import COMMAND_TIMEOUTS, Runtime
from data_tasks.settings import Settings

_runtime: tuple[int, Runtime] | None = None
_sweep_runtime: tuple[int, Runtime] | None = None


def _shutting_down() -> bool:
    """True when this process itself was told to stop (the solo and threads pools)."""
    return bool(worker_state.should_stop or worker_state.should_terminate)


def runtime(app: Any, hostname: str | None) -> Runtime:
    """This process's runtime; a forked child builds its own connections."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        settings = Settings.from_env()
        built = Runtime.build(settings, CeleryPublisher(app, settings.queue), hostname=hostname)
        built.should_stop = _shutting_down
        _runtime = (os.getpid(), built)
    return _runtime[1]


def sweep_runtime(app: Any, hostname: str | None) -> Runtime:
    """This process's runtime for the sweep: records only, so with the commands' timeouts."""
    global _sweep_runtime
    if _sweep_runtime is None or _sweep_runtime[0] != os.getpid():
        settings = Settings.from_env()
        built = Runtime.build(
            settings,
            CeleryPublisher(app, settings.queue),
            hostname=hostname,
            connect_timeout=settings.connect_timeout_seconds,
            timeouts=COMMAND_TIMEOUTS,
        )
        _sweep_runtime = (os.getpid(), built)
    return _sweep_runtime[1]
