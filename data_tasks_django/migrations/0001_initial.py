"""The records tables (layout 2), and the unmanaged model the admin and permissions use."""

from __future__ import annotations

from django.db import migrations, models

from data_tasks_django.schema import create_or_upgrade


class Migration(migrations.Migration):
    """Create task_records, task_lanes, task_history and data_tasks_schema, or upgrade them."""

    initial = True
    # The tables are made on a connection of their own, committed by the runner's code.
    atomic = False
    dependencies: list[tuple[str, str]] = []

    operations = [
        # Reversing keeps the records: they say which data changes already ran.
        migrations.RunPython(create_or_upgrade, migrations.RunPython.noop),
        migrations.CreateModel(
            name="DataTask",
            fields=[
                ("version", models.CharField(max_length=14, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=200)),
                ("status", models.CharField(max_length=16)),
            ],
            options={
                "verbose_name": "data task",
                "db_table": "task_records",
                "ordering": ("version",),
                "managed": False,
                "default_permissions": ("view", "change"),
            },
        ),
    ]
