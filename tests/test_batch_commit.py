"""How a batch commits on PostgreSQL: without waiting for the disk unless a team asks it to,
while the records' own changes (a lane's finish above all) keep the server's setting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from data_tasks import operations
from data_tasks.publisher import RecordingPublisher
from data_tasks.runtime import Runtime
from data_tasks.settings import Settings
from data_tasks.status import Status
from tests.items import applied_counts, create_items
from tests.running import record

VERSION = "20250901000700"
HEAD = '''"""Add one to items.applied; note the synchronous_commit each batch commits with."""

from sqlalchemy import column, select, table, text

from data_tasks import keyset_backfill, row_iteration

items = table("items", column("id"))
ADD = text("UPDATE items SET applied = applied + 1 WHERE id BETWEEN :f AND :l")
NOTE = text("INSERT INTO batch_commits (setting) VALUES (current_setting('synchronous_commit'))")

'''
# Integer keys run their COMMIT with the next batch's plan; rows and throttled tasks do not.
SHAPES = {
    "keyset_backfill": """
@keyset_backfill("items", key="id", batch_size=100)
def by_keys(session, first_id, last_id):
    session.execute(ADD, {"f": first_id, "l": last_id})
    session.execute(NOTE)
""",
    "row_iteration": """
@row_iteration(select(items.c.id), key="id", batch_size=100)
def by_rows(session, rows):
    session.execute(ADD, {"f": rows[0].id, "l": rows[-1].id})
    session.execute(NOTE)
""",
    "throttled keyset_backfill": """
@keyset_backfill("items", key="id", batch_size=100)
def by_keys(session, first_id, last_id):
    session.execute(ADD, {"f": first_id, "l": last_id})
    session.execute(NOTE)


@by_keys.throttle
def never(session):
    return 0.0
""",
}
# What a lane's row is changed with: every change notes its new status and the setting.
LANE_TRIGGER = [
    "CREATE TABLE lane_commits (status text, setting text)",
    """CREATE FUNCTION note_lane() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO lane_commits VALUES (NEW.status, current_setting('synchronous_commit'));
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER note_lane AFTER UPDATE ON task_lanes FOR EACH ROW EXECUTE FUNCTION note_lane()",
]


@pytest.fixture
def noted(pg_settings: Settings) -> Iterator[Runtime]:
    """A runtime whose tables note the setting of every batch and of every lane change."""
    runtime = Runtime.build(pg_settings, RecordingPublisher(), hostname="tests@localhost")
    runtime.create_tables()
    with runtime.engine.begin() as connection:
        connection.execute(text("CREATE TABLE batch_commits (setting text)"))
        for statement in LANE_TRIGGER:
            connection.execute(text(statement))
    yield runtime
    runtime.close()


def settings_seen(engine: Engine, query: str) -> set[str]:
    """The distinct values of one column of the notes."""
    with engine.connect() as connection:
        return {str(value) for (value,) in connection.execute(text(query))}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize(
    ("configured", "batches_commit_with"),
    [(None, "off"), ("on", "on"), ("remote_apply", "remote_apply"), ("", "on")],
)
def test_batches_commit_with_the_configured_setting_and_a_lane_finishes_with_the_servers(
    noted: Runtime, shape: str, configured: str | None, batches_commit_with: str
) -> None:
    if configured is not None:
        noted.settings = noted.settings.with_(batch_synchronous_commit=configured)
    (noted.settings.tasks_dir / f"{VERSION}_noted.py").write_text(HEAD + SHAPES[shape])
    create_items(noted.engine, 1000)

    run = operations.run_inline(noted, VERSION)

    assert run.status == Status.SUCCEEDED, record(noted, VERSION).last_error
    assert applied_counts(noted.engine) == {1: 1000}
    assert settings_seen(noted.engine, "SELECT setting FROM batch_commits") == {batches_commit_with}
    # The server's own setting here is "on": the finish, whose commit makes every batch
    # before it durable, waits for the disk whatever the batches do.
    finished = "SELECT setting FROM lane_commits WHERE status = 'succeeded'"
    assert settings_seen(noted.engine, finished) == {"on"}


@pytest.mark.parametrize("value", ["maybe", "OFF ", "off; DROP TABLE items"])
def test_an_unknown_setting_is_refused_with_one_line_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env({"DATA_TASKS_BATCH_SYNCHRONOUS_COMMIT": value})
    message = str(refused.value)
    assert "\n" not in message
    assert "DATA_TASKS_BATCH_SYNCHRONOUS_COMMIT" in message and repr(value) in message
    assert "off, local, remote_write, on, remote_apply" in message
