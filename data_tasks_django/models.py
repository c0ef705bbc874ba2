"""The admin's handle on the data tasks: task_records as a read-only, unmanaged model.

Its table is created and upgraded by the runner's own schema code (the app's migrations call
it); the model exists so that the admin lists the data tasks and Django's permissions apply:
`view_datatask` to see them, `change_datatask` to pause, resume, cancel and retry them.
"""

from __future__ import annotations

from django.db import models


class DataTask(models.Model):
    """One data task's record."""

    version = models.CharField(max_length=14, primary_key=True)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16)

    class Meta:
        managed = False
        db_table = "task_records"
        ordering = ("version",)
        verbose_name = "data task"
        default_permissions = ("view", "change")

    def __str__(self) -> str:
        return f"{self.version} {self.name}"
