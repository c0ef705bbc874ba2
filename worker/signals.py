"""Worker lifecycle hooks: tell chunks in the pool's children when the worker is stopping.

A prefork child is not told about SIGTERM (celery#2807), so the main process raises a
flag in Redis that every chunk polls between batches, in the round trip that renews its lock.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutting_down
from redis.exceptions import RedisError

from data_tasks.coordination import Coordinator, connect
from data_tasks.database import MissingDriver, require_driver
from data_tasks.settings import Settings

logger = logging.getLogger("data_tasks")


def _coordinator() -> Coordinator:
    settings = Settings.from_env()
    return Coordinator(connect(settings), settings)


@worker_ready.connect  # type: ignore[untyped-decorator]
def clear_shutdown_flag(sender: Any = None, **_: Any) -> None:
    """A worker that starts under a name clears the flag its predecessor may have left."""
    try:
        _coordinator().set_shutting_down(sender.hostname, False)
    except RedisError as error:
        logger.warning("could not clear the shutdown flag: %s", error)


@worker_shutting_down.connect  # type: ignore[untyped-decorator]
def raise_shutdown_flag(sender: Any = None, **_: Any) -> None:
    """Chunks in this worker finish their batch, enqueue their successor and return."""
    try:
        _coordinator().set_shutting_down(str(sender), True)
    except RedisError as error:
        logger.warning("could not raise the shutdown flag: %s", error)


@worker_init.connect  # type: ignore[untyped-decorator]
def raise_flag_on_soft_shutdown(sender: Any = None, **_: Any) -> None:
    """Raise the flag when a cold shutdown starts its soft wait, not after it."""
    # SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT (Heroku), waits worker_soft_shutdown_timeout
    # before sending worker_shutting_down; chunks must hear of it at the start of that wait to
    # finish their batch and hand over in time.
    wait = getattr(sender, "wait_for_soft_shutdown", None)
    if wait is None:
        return

    def flag_then_wait() -> None:
        raise_shutdown_flag(sender.hostname)
        wait()

    sender.wait_for_soft_shutdown = flag_then_wait


@worker_init.connect  # type: ignore[untyped-decorator]
def refuse_without_driver(**_: Any) -> None:
    """Stop at start with one line when the database driver is missing, not at every job."""
    try:
        require_driver(Settings.from_env().database_url)
    except MissingDriver as error:
        raise SystemExit(f"error: {error}") from None
