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


def test_a_keyset_batch_costs_one_round_trip_fewer_than_a_hand_written_loop(
    runtime: Runtime, tasks_dir: Path
) -> None:
    runtime.settings = runtime.settings.with_(chunk_seconds=600.0)
    versions = iter(range(20260101000000, 20260101000100))

    def deploy_task() -> None:
        path = tasks_dir / f"{next(versions)}_count_items.py"
        path.write_text(textwrap.dedent(TASK.format(batch=BATCH)))
        assert enqueue(runtime).enqueued

    def run_task() -> None:
        assert drain(runtime)[-1]["outcome"] == "succeeded"

    loop = per_batch(runtime.engine, lambda: hand_written_loop(runtime.engine))
    runner = per_batch(runtime.engine, run_task, deploy_task)

    print(f"\nround trips a batch: loop {loop}, runner {runner}")
    assert loop == 3  # BEGIN, UPDATE, COMMIT
    # The batch's plan and BEGIN go out with the previous batch's COMMIT, then the UPDATE.
    assert runner == loop - 1
