"""The Celery app: `celery -A worker worker` runs the chunk jobs, Flower shows them."""

from worker.app import app

__all__ = ["app"]
