"""Each shape of data task, run through run_chunk in-process on PostgreSQL and on SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from data_tasks.data_task import FINISHED
from data_tasks.runtime import Runtime
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.running import enqueue_and_drain, lane, record

ROWS = 5_003  # not a multiple of any batch size, so the last batch is a short one


@pytest.mark.parametrize(
    ("file_name", "expected", "processed"),
    [
        ("20250101000000_count_items.py", {1: ROWS}, ROWS),
        ("20250102000000_count_even_items.py", {1: ROWS // 2, 0: ROWS - ROWS // 2}, ROWS // 2),
        ("20250103000000_count_item_rows.py", {1: ROWS}, ROWS),
        # Custom batches count calls: eight slices of 700 ids, then the one that says "done".
        ("20250104000000_count_items_custom.py", {1: ROWS}, 9),
        ("20250105000000_count_items_at_once.py", {1: ROWS}, 1),
    ],
    ids=["keyset_backfill", "keyset_backfill_where", "row_iteration", "custom", "one_shot"],
)
def test_each_shape_changes_every_row_once_and_succeeds(
    db_runtime: Runtime, file_name: str, expected: dict[int, int], processed: int
) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, file_name)
    create_items(db_runtime.engine, ROWS)
    version = file_name[:14]

    report, summaries = enqueue_and_drain(db_runtime)

    assert [item.version for item in report.enqueued] == [version]
    assert summaries[-1]["outcome"] == "succeeded"
    assert applied_counts(db_runtime.engine) == expected
    done = record(db_runtime, version)
    assert done.state is Status.SUCCEEDED
    assert done.finished_at is not None and done.started_at is not None
    assert done.processed == processed


def test_a_keyset_backfill_with_where_only_counts_matching_keys(db_runtime: Runtime) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, "20250102000000_count_even_items.py")
    create_items(db_runtime.engine, 1_000)

    enqueue_and_drain(db_runtime)

    with db_runtime.engine.connect() as connection:
        odd_touched = connection.execute(
            text("SELECT count(*) FROM items WHERE id % 2 = 1 AND applied <> 0")
        ).scalar_one()
    assert odd_touched == 0
    done = record(db_runtime, "20250102000000")
    assert (done.processed, done.total) == (500, 500)
    assert lane(db_runtime, "20250102000000").cursor_value == 1_000


def test_one_shot_and_custom_end_with_the_finished_cursor(db_runtime: Runtime) -> None:
    copy_tasks(
        db_runtime.settings.tasks_dir,
        "20250104000000_count_items_custom.py",
        "20250105000000_count_items_at_once.py",
    )
    create_items(db_runtime.engine, 1_500)

    enqueue_and_drain(db_runtime)

    assert applied_counts(db_runtime.engine) == {2: 1_500}
    custom = record(db_runtime, "20250104000000")
    assert lane(db_runtime, "20250104000000").cursor_value == FINISHED
    assert custom.processed == 4  # three slices of 700, then the call that said "finished"
    assert lane(db_runtime, "20250105000000").cursor_value == FINISHED
