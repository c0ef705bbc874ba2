"""`install(app)`: the data task jobs on the Django project's own Celery app."""

from __future__ import annotations

from typing import Any

from data_tasks import celery
from data_tasks_django import conf
from data_tasks_django.connection import prepare


def install(app: Any) -> None:
    """Register the chunk and sweep jobs on the project's app, with settings from Django's.

    Call it in `<project>/celery.py` after config_from_object: the jobs keep their own
    reliability options, route to DATA_TASKS' queue, and the sweep joins the beat schedule.
    Each worker process sets Django up and finds the apps' task folders before its first job.
    """

    def install_now(**_: Any) -> None:
        celery.install(app, conf.build_settings(with_folders=False), prepare)

    # `<project>/celery.py` is imported while Django imports the settings module (through the
    # project package): the settings are read once the app loads its configuration from them.
    if app.configured:
        install_now()
    else:
        app.on_after_configure.connect(install_now, weak=False)
