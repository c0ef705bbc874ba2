"""The one generic Celery job: a shell that validates the message and calls the runner."""

from __future__ import annotations

import logging
from typing import Any

from data_tasks.errors import InvalidMessage, PassRunning
from data_tasks.publisher import JOB_NAME, SWEEP_JOB_NAME, ChunkMessage
from data_tasks.runner import run_chunk
from data_tasks.scheduler import enqueue
from worker.app import app
from worker.process import runtime, sweep_runtime

logger = logging.getLogger("data_tasks")


@app.task(name=JOB_NAME, bind=True)  # type: ignore[untyped-decorator]
def run_chunk_job(self: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one chunk of the data task the message names (by version and epoch only)."""
    try:
        message = ChunkMessage.from_kwargs(kwargs)
    except InvalidMessage as error:
        logger.error("refused chunk message %s: %s", self.request.id, error)
        return {"outcome": "invalid_message", "error": str(error)}
    current = runtime(app, self.request.hostname)

    def report(summary: dict[str, Any]) -> None:
        total, processed = summary.get("total"), summary.get("processed", 0)
        percent = round(100.0 * processed / total, 1) if total else None
        progress = {**summary, "percent": percent}
        # Flower's task view and API show only celery's own task fields: `result` is the one
        # that carries the progress there (state PROGRESS), until task-succeeded replaces it.
        self.send_event("task-progress", result=progress, **progress)

    current.on_progress = report
    return run_chunk(current, message)


@app.task(name=SWEEP_JOB_NAME, bind=True)  # type: ignore[untyped-decorator]
def sweep_job(self: Any) -> dict[str, Any]:
    """The deploy hook's pass on a schedule: re-publish lost jobs, reclaim dead runs."""
    try:
        report = enqueue(sweep_runtime(app, self.request.hostname))
    except PassRunning as running:
        logger.info("sweep skipped: %s", running)
        return {"skipped": str(running)}
    for item in report.enqueued:
        logger.info("sweep enqueued %s (epoch %s, %s)", item.version, item.epoch, item.reason)
    return {
        "enqueued": [item.version for item in report.enqueued],
        "in_flight": report.in_flight,
        "failed": report.failed,
    }
