"""The bodies of the two Celery jobs, and the runtime each worker process keeps for its life.

data_tasks.celery registers them on an app; nothing here builds or names an app.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.worker import state as worker_state

from data_tasks.errors import InvalidMessage, PassRunning
from data_tasks.history import send_unsent
from data_tasks.publisher import CeleryPublisher, ChunkMessage
from data_tasks.runner import run_chunk
from data_tasks.runtime import COMMAND_TIMEOUTS, Prepare, Runtime
from data_tasks.scheduler import enqueue
from data_tasks.settings import Settings

logger = logging.getLogger("data_tasks")

# One runtime per app and use in this process, with the pid that built it: a forked child
# builds its own.
_runtimes: dict[tuple[int, str], tuple[int, Runtime]] = {}


def _shutting_down() -> bool:
    """True when this process itself was told to stop (the solo and threads pools)."""
    return bool(worker_state.should_stop or worker_state.should_terminate)


def process_runtime(
    app: Any,
    settings: Settings,
    hostname: str | None,
    sweep: bool = False,
    prepare: Prepare | None = None,
) -> Runtime:
    """This process's runtime for the app; chunks it runs publish through that same app.

    The sweep's runtime touches records only, so it gets the commands' lock and statement
    timeouts; batches keep the server's own limits.
    """
    key = (id(app), "sweep" if sweep else "chunks")
    found = _runtimes.get(key)
    if found is None or found[0] != os.getpid():
        built = Runtime.build(
            settings,
            CeleryPublisher(app, settings.queue),
            hostname=hostname,
            connect_timeout=settings.connect_timeout_seconds if sweep else None,
            timeouts=COMMAND_TIMEOUTS if sweep else None,
        )
        built.should_stop = _shutting_down
        if prepare is not None:
            prepare(built)
        _runtimes[key] = (os.getpid(), built)
        return built
    return found[1]


def run_chunk_job(
    task: Any, settings: Settings, kwargs: dict[str, Any], prepare: Prepare | None = None
) -> dict[str, Any]:
    """Run one chunk of the data task the message names (by version and epoch only)."""
    try:
        message = ChunkMessage.from_kwargs(kwargs)
    except InvalidMessage as error:
        logger.error("refused chunk message %s: %s", task.request.id, error)
        return {"outcome": "invalid_message", "error": str(error)}
    current = process_runtime(task.app, settings, task.request.hostname, prepare=prepare)

    def report(summary: dict[str, Any]) -> None:
        total, processed = summary.get("total"), summary.get("processed", 0)
        percent = round(100.0 * processed / total, 1) if total else None
        progress = {**summary, "percent": percent}
        # Flower's task view and API show only celery's own task fields: `result` is the one
        # that carries the progress there (state PROGRESS), until task-succeeded replaces it.
        task.send_event("task-progress", result=progress, **progress)

    current.on_progress = report
    return run_chunk(current, message)


def sweep_job(task: Any, settings: Settings, prepare: Prepare | None = None) -> dict[str, Any]:
    """The deploy hook's pass on a schedule: re-publish lost jobs, reclaim dead runs."""
    current = process_runtime(task.app, settings, task.request.hostname, True, prepare)
    try:
        report = enqueue(current)
    except PassRunning as running:
        logger.info("sweep skipped: %s", running)
        return {"skipped": str(running)}
    for item in report.enqueued:
        logger.info("sweep enqueued %s (epoch %s, %s)", item.version, item.epoch, item.reason)
    # A process that made a change gets stale_seconds to send its notice itself.
    resent = send_unsent(current.engine, current.catalog, settings.stale_seconds)
    return {
        "enqueued": [item.version for item in report.enqueued],
        "in_flight": report.in_flight,
        "failed": report.failed,
        "notices_resent": resent,
    }
