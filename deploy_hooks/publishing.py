"""The publisher the deploy hook and the operator commands hand chunk jobs to."""

from __future__ import annotations

from data_tasks.publisher import CeleryPublisher, ChunkMessage
from data_tasks.settings import Settings


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

            self.publisher = CeleryPublisher(make_app(self.settings), self.settings.queue)
        self.publisher.publish(message, countdown)

    def close(self) -> None:
        """Release the app's broker connections."""
        if self.publisher is not None:
            self.publisher.app.close()
