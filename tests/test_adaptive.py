"""Adaptive batch sizes: a batch that hits the database's statement timeout is halved."""

from __future__ import annotations

from sqlalchemy import Engine

from data_tasks.outcomes import is_statement_timeout
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.running import drain, lane, record

VERSION = "20250701000000"


def test_a_batch_cancelled_by_a_statement_timeout_is_halved_and_the_task_finishes(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250701000000_adaptive_timeout.py")
    create_items(postgres_engine, 4_000)

    enqueue(runtime)
    summaries = drain(runtime)

    retries = [s for s in summaries if s["outcome"] == "retrying"]
    assert len(retries) == 1
    assert "QueryCanceled" in retries[0]["error"]
    assert summaries[-1]["outcome"] == "succeeded"
    assert record(runtime, VERSION).state is Status.SUCCEEDED
    # Without the halving every try is the same 4,000-key batch, and the task ends failed.
    assert applied_counts(postgres_engine) == {1: 4_000}


def test_only_a_cancelled_statement_counts_as_a_timeout() -> None:
    assert not is_statement_timeout(RuntimeError("boom"))
    assert not is_statement_timeout(ValueError())


def test_a_growing_batch_stops_at_its_upper_bound(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250702000000_adaptive_bounded.py")
    create_items(postgres_engine, 5_000)

    enqueue(runtime)
    drain(runtime)

    # Fast batches against a 60 s target grow 1.2x a step: 100, 120, 144, then the bound.
    assert lane(runtime, "20250702000000").batch_size == 150
    assert applied_counts(postgres_engine) == {1: 5_000}


def test_a_backfill_that_sets_no_batch_size_grows_its_fast_batches(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250703000000_adaptive_default.py")
    create_items(postgres_engine, 30_000)

    enqueue(runtime)
    drain(runtime)

    # It starts at 1,000 keys; batches far under the default target grow up to 1.2x each.
    assert (lane(runtime, "20250703000000").batch_size or 0) > 1_000
    assert applied_counts(postgres_engine) == {1: 30_000}
    assert record(runtime, "20250703000000").state is Status.SUCCEEDED


def test_a_backfill_that_sets_no_batch_size_shrinks_its_slow_batches(
    runtime: Runtime, postgres_engine: Engine
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250704000000_adaptive_default_slow.py")
    # 1,000 + 500 + 250 keys: each batch takes at least twice the target, so each next one
    # is half the last, whatever the machine's speed.
    create_items(postgres_engine, 1_750)

    enqueue(runtime)
    drain(runtime)

    assert lane(runtime, "20250704000000").batch_size == 125
    assert applied_counts(postgres_engine) == {1: 1_750}
