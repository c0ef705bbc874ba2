"""The Django app: `"data_tasks_django"` in INSTALLED_APPS."""

from __future__ import annotations

from django.apps import AppConfig


class DataTasksConfig(AppConfig):
    """The data tasks' tables (as migrations), the admin page and `manage.py data_tasks`."""

    name = "data_tasks_django"
    label = "data_tasks"
    verbose_name = "Data tasks"
    default_auto_field = "django.db.models.BigAutoField"
