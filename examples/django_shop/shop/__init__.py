"""The shop project: its Celery app is loaded with Django, so that shared tasks use it."""

from shop.celery import app as celery_app

__all__ = ["celery_app"]
