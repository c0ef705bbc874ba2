"""Builds the one Celery app from the settings; nothing else in the project builds one."""

from __future__ import annotations

from celery import Celery

from data_tasks.publisher import JOB_NAME, SWEEP_JOB_NAME
from data_tasks.settings import Settings


def _plain_redis(settings: Settings) -> bool:
    """True for a redis:// broker, which worker.transport hardens (rediss:// keeps kombu's own)."""
    return settings.redis_url.startswith("redis://")


def make_app(settings: Settings) -> Celery:
    """A Celery app on the settings' Redis, JSON only, with late acks on a dedicated queue."""
    app = Celery("worker", broker=settings.redis_url, include=["worker.jobs", "worker.signals"])
    app.conf.update(
        # JSON only: a message can never make a worker unpickle an object.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        # A queue entry that is not JSON is dropped and logged instead of stopping the worker.
        broker_transport="worker.transport:Transport" if _plain_redis(settings) else None,
        # The data task queue is the default, so a plain `celery -A worker worker` consumes it.
        task_default_queue=settings.queue,
        task_routes={JOB_NAME: {"queue": settings.queue}},
        # At least once: a chunk killed mid-way is delivered again; the records make that safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Chunks are short; an unacked one comes back after this, far above a chunk's length.
        # A Redis that accepts connections but never answers makes a command fail after
        # socket_timeout instead of hanging (kombu's default waits for ever); a timed-out
        # command is not sent again on its own.
        broker_transport_options={
            "visibility_timeout": 3600,
            "socket_connect_timeout": settings.connect_timeout_seconds,
            "socket_timeout": max(settings.connect_timeout_seconds, 10.0),
            "retry_on_timeout": False,
        },
        broker_connection_retry_on_startup=True,
        # Progress lives in task_records; the chunk summary travels in Flower's events.
        task_ignore_result=True,
        task_track_started=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # Warm shutdown lets the batch in flight finish; the README gives the grace periods.
        worker_enable_soft_shutdown_on_idle=True,
        worker_soft_shutdown_timeout=settings.soft_shutdown_seconds,
        worker_hijack_root_logger=False,
    )
    if settings.sweep_seconds > 0:
        # `celery -A worker beat` (or `worker -B`) runs the sweep: lost jobs, dead runs.
        app.conf.beat_schedule = {
            "data-tasks-sweep": {"task": SWEEP_JOB_NAME, "schedule": settings.sweep_seconds}
        }
    return app


app = make_app(Settings.from_env())
