"""The Celery app: `celery -A worker worker` runs chunk jobs, `celery -A worker flower` shows them."""

from worker.app import app

__all__ = ["app"]
