"""The publisher the deploy hook and the operator commands hand chunk jobs to."""

from __future__ import annotations

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


class LazyCeleryPublisher:
    """Builds a Celery app on the settings' broker at the first publish, not before.

    Importing Celery and kombu is most of the deploy hook's cost: a deploy with nothing new
    never pays for it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.publisher: CeleryPublisher | None = None

    def publish(self, message: ChunkMessage, countdown: float = 0.0) -> None:
        """send_task through an app made for these settings."""
        if self.publisher is None:
            from worker.app import make_app

            app = make_app(self.settings)
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
