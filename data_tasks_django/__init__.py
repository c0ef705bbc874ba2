"""Data tasks for Django projects: the Django ORM in exactly-once batches.

Add "data_tasks_django" to INSTALLED_APPS, call `install(app)` in the project's Celery app,
and write task files in each app's `data_migrations/` folder.
"""

from data_tasks.decorators import custom_batches, one_shot
from data_tasks_django.shapes import keyset_backfill, row_iteration

__all__ = ["custom_batches", "keyset_backfill", "one_shot", "row_iteration"]
