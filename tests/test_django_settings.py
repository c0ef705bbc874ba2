"""The Django app reads everything from the project's settings, and refuses, in one line,
what would put a batch's ORM writes outside its transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shop import SHOP, Shop


def test_the_settings_come_from_databases_the_broker_and_the_app_registry(
    shop: Shop, shop_in_process: str
) -> None:
    from django.test import override_settings

    from data_tasks_django import conf

    chosen = {"DIR": str(shop.tasks_dir), "CHUNK_SECONDS": 5, "CELERY_APP": "shop.celery:app"}
    with override_settings(DATA_TASKS=chosen):
        settings = conf.build_settings()

    assert settings.database_url == shop_in_process
    assert settings.redis_url.startswith("redis://127.0.0.1:6379/")
    assert settings.celery_app == "shop.celery:app"
    assert settings.chunk_seconds == 5
    assert settings.tasks_dirs == (shop.tasks_dir, SHOP / "accounts" / "data_migrations")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}},
            "data tasks run on PostgreSQL: DATABASES['default'] uses django.db.backends.sqlite3",
        ),
        (
            {"CELERY_BROKER_URL": "amqp://guest@127.0.0.1//"},
            "DATA_TASKS['REDIS_URL'] is not set and CELERY_BROKER_URL is not a Redis URL: "
            "the data tasks keep their leases in Redis",
        ),
        (
            {"DATA_TASKS": {"DATABASE": "reports"}},
            "DATA_TASKS['DATABASE'] is 'reports', which DATABASES does not define",
        ),
    ],
    ids=["sqlite", "amqp-broker", "unknown-alias"],
)
# Django's open connections keep their settings; only the data tasks' reading is tested.
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_settings_that_cannot_work_are_refused_in_one_line(
    shop_in_process: str, changes: dict[str, object], message: str
) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from data_tasks_django import conf

    with override_settings(**changes), pytest.raises(ImproperlyConfigured) as refused:
        conf.build_settings(with_folders=False)
    assert str(refused.value) == message


def test_a_queryset_on_another_database_is_refused(shop_in_process: str) -> None:
    from accounts.models import Customer

    from data_tasks_django import keyset_backfill

    with pytest.raises(ValueError, match=r"reads database 'replica'.*use \.using\('default'\)"):
        keyset_backfill(Customer.objects.using("replica"))(lambda customers: None)


def test_a_queryset_batch_outside_the_runners_transaction_is_refused(
    shop: Shop, shop_in_process: str
) -> None:
    from sqlalchemy.orm import Session

    from data_tasks.data_task import Batch
    from data_tasks.discovery import discover, load
    from data_tasks_django.shapes import OutsideBatch

    shop.add_task("20250801000000_append_x.py")
    shop.add_customers(10)
    [task_file] = discover(Path(shop.tasks_dir))
    task = load(task_file)

    with Session(shop.engine) as session, pytest.raises(OutsideBatch) as refused:
        task.apply(session, Batch(next_cursor=10, size=10, payload=(1, 10)))
    assert "run it from the project's own Celery app or `manage.py data_tasks`" in str(
        refused.value
    )
    assert shop.notes() == {"": 10}


def test_the_shops_own_celery_app_carries_the_jobs_with_their_reliability_options(
    shop_in_process: str,
) -> None:
    from shop.celery import app

    chunk, sweep = app.tasks["data_tasks.run_chunk"], app.tasks["data_tasks.sweep"]

    assert (chunk.acks_late, chunk.reject_on_worker_lost, chunk.serializer) == (True, True, "json")
    assert sweep.acks_late and sweep.ignore_result
    assert app.conf.task_routes["data_tasks.run_chunk"] == {"queue": "data_tasks"}
    assert app.conf.beat_schedule["data-tasks-sweep"]["task"] == "data_tasks.sweep"
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport == "data_tasks.transport:Transport"
    assert app.conf.broker_transport_options["visibility_timeout"] >= 3600
