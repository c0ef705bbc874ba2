"""A team's own Celery app on RabbitMQ: a backfill over many chunks, a SIGKILL, a duplicate."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu.connection import Connection
from sqlalchemy import Engine

from data_tasks.publisher import JOB_NAME
from data_tasks.settings import Settings
from tests.faults.harness import (
    ROWS,
    SLOW,
    backfill,
    exactly_once,
    fault_settings,
    hook_ok,
    log_lines,
    record,
    wait_progress,
    wait_status,
)
from tests.processes import WorkerProcess
from tests.services import REDIS_URL, unavailable

pytestmark = pytest.mark.e2e

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
USER_APP = "tests.fixtures.userapp"


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue name of this test's own on the shared RabbitMQ, deleted at the end."""
    name = f"data_tasks_test_{os.getpid()}_{secrets.token_hex(3)}"
    connection = Connection(RABBITMQ_URL, connect_timeout=3)  # type: ignore[no-untyped-call]
    failure: Exception | None = None
    try:
        connection.ensure_connection(max_retries=1)  # type: ignore[no-untyped-call]
    except Exception as error:
        failure = error
    if failure is not None:  # outside the except block: one line, no chained traceback
        unavailable(f"RabbitMQ at {RABBITMQ_URL}", failure)
    yield name
    try:
        connection.default_channel.queue_delete(name)  # type: ignore[no-untyped-call]
    finally:
        connection.release()  # type: ignore[no-untyped-call]


def user_env(queue: str, broker: str = RABBITMQ_URL, **extra: str) -> dict[str, str]:
    """The environment of the team's worker and deploy hook: its app, its broker, our queue."""
    return {
        "DATA_TASKS_CELERY_APP": USER_APP,
        "DATA_TASKS_QUEUE": queue,
        "USERAPP_BROKER_URL": broker,
        **extra,
    }


def user_worker(
    settings: Settings, tmp_path: Path, env: dict[str, str], *args: str
) -> WorkerProcess:
    """`celery -A tests.fixtures.userapp worker -Q celery,<queue>`, ready."""
    queues = f"celery,{env['DATA_TASKS_QUEUE']}"
    worker = WorkerProcess(
        settings, tmp_path, app=USER_APP, extra_env=env, extra_args=["-Q", queues, *args]
    )
    return worker.wait_ready()


def test_a_sigkilled_worker_on_rabbitmq_is_finished_by_a_fresh_one_every_row_once(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    queue: str,
) -> None:
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    env = user_env(queue, DATA_TASKS_SWEEP_SECONDS="1")
    first = user_worker(settings, tmp_path, env)
    workers.append(first)
    assert f"enqueued {SLOW}" in hook_ok(settings, **env)
    wait_progress(postgres_engine, SLOW, 30_000)
    received = log_lines(first.log(), f"Task {JOB_NAME}[", "] received")
    first.kill()
    killed_at = record(postgres_engine, SLOW)["processed"]
    assert killed_at < ROWS

    # The killed worker's unacked message goes back to the queue as its connection drops;
    # the fresh worker (with beat, as a team runs it) takes the run over and finishes it.
    fresh = user_worker(settings, tmp_path, env, "-B", "-s", str(tmp_path / "beat"))
    workers.append(fresh)
    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    assert record(postgres_engine, SLOW)["processed"] == ROWS
    exactly_once(postgres_engine)
    assert "amqp://guest:**@127.0.0.1:5672//" in fresh.log()
    # RabbitMQ gave the fresh worker the very message the killed one held.
    in_flight = received[-1].split("[")[-1].split("]")[0]
    assert log_lines(fresh.log(), f"Task {JOB_NAME}[{in_flight}] received"), fresh.log()


@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_a_message_delivered_twice_runs_once_on_either_broker(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    queue: str,
    broker: str,
) -> None:
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    url = RABBITMQ_URL if broker == "rabbitmq" else REDIS_URL
    env = user_env(queue, url)
    pair = [user_worker(settings, tmp_path, env), user_worker(settings, tmp_path, env)]
    workers += pair

    started = time.monotonic()
    hook_ok(settings, **env)
    # The very message the hook published, once more, through an app of the test's own: a new
    # task's lane waits at epoch 0.
    epoch = 0
    publisher = Celery("publisher", broker=url)
    kwargs = {"version": SLOW, "epoch": epoch, "unknown_retries": 0, "lane": 0}
    publisher.send_task(JOB_NAME, kwargs=kwargs, queue=queue)
    publisher.close()

    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    seconds = time.monotonic() - started
    print(f"broker={broker} rows={ROWS} seconds={seconds:.2f} rows/s={ROWS / seconds:,.0f}")
    logs = (pair[0].log() + pair[1].log()).replace("\n", " \n")
    refused = [
        line
        for event in ("duplicate", "stale_message")
        for line in log_lines(logs, f"event={event} version={SLOW} lane=0 epoch={epoch}")
    ]
    assert len(refused) == 1, logs
    assert all(worker.alive for worker in pair)
    exactly_once(postgres_engine)


def test_the_worker_names_an_app_setting_that_conflicts_once_at_start(
    pg_settings: Settings, workers: list[WorkerProcess], tmp_path: Path, queue: str
) -> None:
    worker = user_worker(pg_settings, tmp_path, user_env(queue, USERAPP_PREFETCH="3"))
    workers.append(worker)
    lines = log_lines(worker.log(), "data tasks: worker_prefetch_multiplier=3 is set by this app")
    assert len(lines) == 1 and "need 1" in lines[0], worker.log()
    assert not log_lines(worker.log(), "data tasks: accept_content")
