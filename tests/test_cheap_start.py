"""A run's start on PostgreSQL reads a handful of rows however large the table: no count."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sqlalchemy import Engine, text

from data_tasks.lanes import LaneStatus
from data_tasks.overview import overview
from data_tasks.runner import run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from tests.items import applied_counts, create_items
from tests.running import drain, lane, record, take

ROWS = 400_000
VERSION = "20260201000000"

# Every row the task's `where` looks at bumps a sequence, which no rollback undoes.
TOUCHED = """
CREATE OR REPLACE FUNCTION touched(id integer) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM nextval('touches');
    RETURN true;
END $$
"""


def first_chunk(runtime: Runtime, options: str) -> str:
    """Write a keyset backfill of a large `items` with the given decorator options, enqueue
    it, and run its first chunk with a zero budget: the run's start and exactly one batch."""
    large_table(runtime.engine)
    write_task(Path(runtime.settings.tasks_dir), options)
    runtime.settings = runtime.settings.with_(chunk_seconds=0.0)
    enqueue(runtime)
    [first] = take(runtime)
    outcome = str(run_chunk(runtime, first)["outcome"])
    runtime.settings = runtime.settings.with_(chunk_seconds=600.0)
    return outcome


def write_task(tasks_dir: Path, options: str) -> None:
    """A keyset backfill of items with the given decorator options."""
    source = f'''\
        """Add one to every item."""

        from sqlalchemy import text

        from data_tasks import keyset_backfill


        @keyset_backfill("items", key="id", batch_size=1000, {options})
        def count_items(session, first_id, last_id):
            session.execute(
                text("UPDATE items SET applied = applied + 1 WHERE id BETWEEN :a AND :b"),
                {{"a": first_id, "b": last_id}},
            )
        '''
    (tasks_dir / f"{VERSION}_count_items.py").write_text(textwrap.dedent(source))


def large_table(engine: Engine) -> None:
    create_items(engine, ROWS)
    with engine.begin() as connection:
        connection.execute(text("DROP SEQUENCE IF EXISTS touches"))
        connection.execute(text("CREATE SEQUENCE touches"))
        connection.execute(text(TOUCHED))
        connection.execute(text("ANALYZE items"))


def touches(engine: Engine) -> int:
    with engine.connect() as connection:
        value, called = connection.execute(text("SELECT last_value, is_called FROM touches")).one()
        return int(value) if called else 0


def test_the_first_batch_of_a_large_table_reads_about_one_batch_of_rows(
    runtime: Runtime, postgres_engine: Engine, tasks_dir: Path
) -> None:
    assert first_chunk(runtime, 'where="touched(id)"') == "continued"

    # One batch of 1,000 keys and a few more, where counting the keys would read all 400,000.
    assert touches(postgres_engine) < 2_000
    [view] = overview(runtime.engine, tasks_dir)
    assert view.progress.total_estimated
    assert view.as_dict()["total_estimated"] is True

    drain(runtime)
    assert applied_counts(postgres_engine) == {1: ROWS}
    done = record(runtime, VERSION)
    # Refined as the lane finished: the total is what it processed, no longer an estimate.
    assert (done.processed, done.total) == (ROWS, ROWS)
    [view] = overview(runtime.engine, tasks_dir)
    assert not view.progress.total_estimated


def test_the_lanes_of_a_large_table_are_cut_from_a_sample_and_stay_balanced(
    runtime: Runtime, postgres_engine: Engine, tasks_dir: Path
) -> None:
    first_chunk(runtime, "parallel=4")

    lanes = [lane(runtime, VERSION, number) for number in range(4)]
    with postgres_engine.connect() as connection:
        for found in lanes:
            low = int(found.lower) if found.lower else 0
            high = int(found.upper or ROWS)
            rows = connection.execute(
                text("SELECT count(*) FROM items WHERE id > :low AND id <= :high"),
                {"low": low, "high": high},
            ).scalar_one()
            # A quarter each, give or take what a sample of about 20,000 keys misses.
            assert abs(rows - ROWS / 4) < ROWS / 4 * 0.2, (found.lane, rows)
            assert found.total is not None and abs(found.total - ROWS / 4) < ROWS / 4 * 0.2

    drain(runtime)
    assert applied_counts(postgres_engine) == {1: ROWS}
    finished = [lane(runtime, VERSION, number) for number in range(4)]
    assert all(found.state is LaneStatus.SUCCEEDED for found in finished)
    assert sum(found.total or 0 for found in finished) == ROWS


def test_a_row_iteration_with_an_in_list_on_a_large_table_starts_from_the_estimate(
    runtime: Runtime, tasks_dir: Path
) -> None:
    large_table(runtime.engine)
    source = '''\
        """Touch every item but two, a page at a time."""

        from sqlalchemy import column, select, table, text

        from data_tasks import row_iteration

        items = table("items", column("id"), column("label"))


        @row_iteration(
            select(items.c.id).where(items.c.label.not_in(["item 1", "item 2"])),
            key="id",
            batch_size=1000,
        )
        def touch_items(session, rows):
            session.execute(
                text("UPDATE items SET applied = applied + 1 WHERE id = :id"),
                [{"id": row.id} for row in rows],
            )
        '''
    (tasks_dir / f"{VERSION}_touch_items.py").write_text(textwrap.dedent(source))
    runtime.settings = runtime.settings.with_(chunk_seconds=0.0)
    enqueue(runtime)

    summary = run_chunk(runtime, take(runtime)[0])

    assert summary["outcome"] == "continued", summary
    assert summary["total"] > 100_000  # the planner's estimate: no count was made
    assert applied_counts(runtime.engine) == {0: ROWS - 1000, 1: 1000}
