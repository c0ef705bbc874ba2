"""The publisher the deploy hook and the operator commands hand chunk jobs to."""

from __future__ import annotations

from typing import Any

from data_tasks.publisher import CeleryPublisher, ChunkMessage
from data_tasks.settings import Settings

# A publish that fails is tried once more, at once: a dropped connection gets a second chance,
# a Redis that does not answer costs at most two socket timeouts, not Celery's default four.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0,
    "interval_max": 0,
}


def load_app(settings: Settings) -> Any:
    """The Celery app DATA_TASKS_CELERY_APP names (as `celery -A` reads it), else the standalone."""
    if settings.celery_app:
        from celery.app.utils import find_app

        return find_app(settings.celery_app)
    from worker.app import make_app

    return make_app(settings)


class LazyCeleryPublisher:
    """Loads the Celery app at the first publish, not before.

    Importing Celery and kombu is most of the deploy hook's cost: a deploy with nothing new
    never pays for it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.publisher: CeleryPublisher | None = None

    def publish(self, message: ChunkMessage, countdown: float = 0.0) -> None:
        """send_task through the team's app (or the standalone one), on its broker."""
        if self.publisher is None:
            app = load_app(self.settings)
            # The hook and the commands wait for Redis no longer than for anything else.
            seconds = self.settings.connect_timeout_seconds
            app.conf.broker_transport_options = {
                **app.conf.broker_transport_options,
                "socket_timeout": seconds,
                "socket_connect_timeout": seconds,
            }
            app.conf.task_publish_retry_policy = PUBLISH_RETRY_POLICY
            app.conf.broker_connection_timeout = seconds
            self.publisher = CeleryPublisher(app, self.settings.queue)
        self.publisher.publish(message, countdown)

    def close(self) -> None:
        """Release the app's broker connections."""
        if self.publisher is not None:
            self.publisher.app.close()
