"""The standalone Celery app, for teams without one: `celery -A worker worker`.

It is a plain app on the settings' broker with the data tasks installed, exactly as a team
installs them on its own app (see data_tasks.celery).
"""

from __future__ import annotations

from celery import Celery

from data_tasks.celery import install
from data_tasks.settings import Settings, read_dotenv


def make_app(settings: Settings) -> Celery:
    """A Celery app on REDIS_URL (or CELERY_BROKER_URL), JSON only, that runs the data tasks."""
    app = Celery("worker", broker=settings.redis_url)
    app.conf.update(
        # JSON only: a message can never make a worker unpickle an object.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        # The data task queue is the default, so a plain `celery -A worker worker` consumes it.
        task_default_queue=settings.queue,
        worker_hijack_root_logger=False,
    )
    install(app, settings)
    return app


# As honcho and foreman do: ./.env fills in what the environment does not set.
read_dotenv()
app = make_app(Settings.from_env())
