"""The shop's Celery app: its own tasks, and the data tasks (`celery -A shop worker`)."""

import os

from celery import Celery

from data_tasks_django.jobs import install

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The chunk and sweep jobs, routed to DATA_TASKS' queue ("data_tasks"), the sweep in beat.
install(app)
