"""Round trips per batch on PostgreSQL, counted on the wire: the runner against a plain loop."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, text

from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from tests.items import applied_counts, create_items
from tests.round_trips import recorded
from tests.running import drain

BATCH = 100

TASK = '''\
"""Add one to every item, {batch} keys a batch."""

from sqlalchemy import text

from data_tasks import keyset_backfill


@keyset_backfill("items", key="id", batch_size={batch})
def count_items(session, first_id, last_id):
    session.execute(
        text("UPDATE items SET applied = applied + 1 WHERE id BETWEEN :first AND :last"),
        {{"first": first_id, "last": last_id}},
    )
'''


ROWS_TASK = '''\
"""Add one to every item, read and written back {batch} rows a page."""

from sqlalchemy import column, select, table, text

from data_tasks import row_iteration

ITEMS = table("items", column("id"), column("label"))
WRITE_BACK = text("UPDATE items SET applied = applied + 1 WHERE id = :id")


@row_iteration(select(ITEMS.c.id, ITEMS.c.label), key="id", batch_size={batch})
def count_items(session, rows):
    session.execute(WRITE_BACK, [{{"id": row.id}} for row in rows])
'''


def hand_written_loop(engine: Engine) -> None:
    """What a person writes: one UPDATE and one commit per batch."""
    with engine.connect() as connection:
        top = int(connection.execute(text("SELECT max(id) FROM items")).scalar_one())
        for low in range(0, top, BATCH):
            connection.execute(
                text("UPDATE items SET applied = applied + 1 WHERE id > :low AND id <= :high"),
                {"low": low, "high": low + BATCH},
            )
            connection.commit()


def hand_written_page_loop(engine: Engine) -> None:
    """What a person writes for a Python-side change: read a page, write it back, commit."""
    write_back = text("UPDATE items SET applied = applied + 1 WHERE id = :id")
    with engine.connect() as connection:
        last = 0
        while True:
            rows = connection.execute(
                text("SELECT id, label FROM items WHERE id > :last ORDER BY id LIMIT :n"),
                {"last": last, "n": BATCH},
            ).all()
            if not rows:
                break
            connection.execute(write_back, [{"id": row.id} for row in rows])
            connection.commit()
            last = rows[-1].id


def per_batch(
    engine: Engine, run: Callable[[], None], prepare: Callable[[], None] = lambda: None
) -> float:
    """Round trips a batch: those of 20 batches less those of 10, over 10 (fixed costs cancel).

    Only `run` is recorded, after `prepare` (a deploy hook's pass, whose cost is not a batch's).
    """
    counts = []
    for batches in (10, 20):
        create_items(engine, batches * BATCH)
        prepare()
        with recorded(engine) as wire:
            run()
        assert applied_counts(engine) == {1: batches * BATCH}
        counts.append(wire.round_trips)
    return (counts[1] - counts[0]) / 10


def runner_per_batch(runtime: Runtime, tasks_dir: Path, source: str) -> float:
    """Round trips a batch of the task in `source`, deployed anew (a new version) per count."""
    runtime.settings = runtime.settings.with_(chunk_seconds=600.0)
    versions = iter(range(20260101000000, 20260101000100))

    def deploy_task() -> None:
        path = tasks_dir / f"{next(versions)}_count_items.py"
        path.write_text(textwrap.dedent(source.format(batch=BATCH)))
        assert enqueue(runtime).enqueued

    def run_task() -> None:
        assert drain(runtime)[-1]["outcome"] == "succeeded"

    return per_batch(runtime.engine, run_task, deploy_task)


def test_a_keyset_batch_costs_one_round_trip_fewer_than_a_hand_written_loop(
    runtime: Runtime, tasks_dir: Path
) -> None:
    loop = per_batch(runtime.engine, lambda: hand_written_loop(runtime.engine))
    runner = runner_per_batch(runtime, tasks_dir, TASK)

    print(f"\nround trips a batch: loop {loop}, runner {runner}")
    assert loop == 3  # BEGIN, UPDATE, COMMIT
    # The batch's plan and BEGIN go out with the previous batch's COMMIT, then the UPDATE.
    assert runner == loop - 1


def test_a_row_iteration_batch_costs_no_more_round_trips_than_a_hand_written_page_loop(
    runtime: Runtime, tasks_dir: Path
) -> None:
    loop = per_batch(runtime.engine, lambda: hand_written_page_loop(runtime.engine))
    runner = runner_per_batch(runtime, tasks_dir, ROWS_TASK)

    print(f"\nround trips a batch: page loop {loop}, runner {runner}")
    assert loop == 4  # BEGIN, SELECT, the write-back's pipeline, COMMIT
    # The BEGIN (and SET LOCAL) go out with the previous batch's COMMIT, which pays for the
    # fence: the page, the fence, the write-back, then that one write.
    assert runner == loop
