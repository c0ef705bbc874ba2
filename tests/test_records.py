"""The task_records table on PostgreSQL and SQLite: compare-and-set moves, inserts, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from data_tasks.errors import InvalidTransition, UnknownVersion
from data_tasks.records import (
    RECORD_FIELDS,
    TaskRecord,
    decode_cursor,
    encode_cursor,
    get,
    insert_missing,
    load_all,
    move,
)
from data_tasks.runtime import Runtime
from data_tasks.status import Status

VERSION = "20250101000000"


def insert(runtime: Runtime, *versions: str) -> None:
    """Pending records for the versions."""
    with runtime.session() as session, session.begin():
        insert_missing(session, [(version, f"task_{version}") for version in versions])


def current(runtime: Runtime, version: str = VERSION) -> TaskRecord:
    """The record as it is now."""
    with runtime.session() as session:
        return get(session, version)


def test_inserting_missing_records_twice_keeps_one_pending_record_each(db_runtime: Runtime) -> None:
    insert(db_runtime, VERSION, "20250102000000")
    with db_runtime.session() as session, session.begin():
        move(session, VERSION, Status.PENDING, Status.ENQUEUED, 0, {"epoch": 1})

    insert(db_runtime, VERSION, "20250102000000", "20250103000000")

    with db_runtime.session() as session:
        records = load_all(session)
    assert {v: (r.status, r.epoch) for v, r in records.items()} == {
        VERSION: ("enqueued", 1),
        "20250102000000": ("pending", 0),
        "20250103000000": ("pending", 0),
    }


def test_move_changes_status_and_values_along_an_allowed_edge(db_runtime: Runtime) -> None:
    insert(db_runtime, VERSION)

    with db_runtime.session() as session, session.begin():
        moved = move(session, VERSION, Status.PENDING, Status.ENQUEUED, 0, {"epoch": 1})

    assert moved
    assert (current(db_runtime).state, current(db_runtime).epoch) == (Status.ENQUEUED, 1)


def test_move_is_a_compare_and_set_on_the_status(db_runtime: Runtime) -> None:
    insert(db_runtime, VERSION)
    with db_runtime.session() as session, session.begin():
        assert move(session, VERSION, Status.PENDING, Status.ENQUEUED, 0, {"epoch": 1})

    # A second claimant read `pending` before the first moved it: it changes nothing.
    with db_runtime.session() as session, session.begin():
        moved = move(session, VERSION, Status.PENDING, Status.ENQUEUED, 0, {"epoch": 1})

    assert not moved
    assert (current(db_runtime).state, current(db_runtime).epoch) == (Status.ENQUEUED, 1)


def test_move_is_a_compare_and_set_on_the_epoch(db_runtime: Runtime) -> None:
    insert(db_runtime, VERSION)
    with db_runtime.session() as session, session.begin():
        move(session, VERSION, Status.PENDING, Status.ENQUEUED, 0, {"epoch": 1})
        move(session, VERSION, Status.ENQUEUED, Status.RUNNING, 1, {"epoch": 2})

    # A runner that claimed at epoch 1 and was overtaken cannot finish the task.
    with db_runtime.session() as session, session.begin():
        moved = move(session, VERSION, Status.RUNNING, Status.SUCCEEDED, 1)

    assert not moved
    assert current(db_runtime).state is Status.RUNNING
    with db_runtime.session() as session, session.begin():
        assert move(session, VERSION, Status.RUNNING, Status.SUCCEEDED, 2)
    assert current(db_runtime).state is Status.SUCCEEDED


def test_move_refuses_an_illegal_edge_before_writing(db_runtime: Runtime) -> None:
    insert(db_runtime, VERSION)

    with (
        pytest.raises(InvalidTransition, match="cannot go from pending to succeeded"),
        db_runtime.session() as session,
        session.begin(),
    ):
        move(session, VERSION, Status.PENDING, Status.SUCCEEDED)

    assert current(db_runtime).state is Status.PENDING


def test_move_from_several_statuses_checks_each_edge(db_runtime: Runtime) -> None:
    insert(db_runtime, VERSION)

    with (
        pytest.raises(InvalidTransition, match="cannot go from running to skipped"),
        db_runtime.session() as session,
    ):
        move(session, VERSION, [Status.PENDING, Status.RUNNING], Status.SKIPPED)

    with db_runtime.session() as session, session.begin():
        assert move(session, VERSION, [Status.PENDING, Status.FAILED], Status.SKIPPED)
    assert current(db_runtime).state is Status.SKIPPED


def test_a_missing_record_is_an_unknown_version(db_runtime: Runtime) -> None:
    with pytest.raises(UnknownVersion), db_runtime.session() as session:
        get(session, VERSION)
    with db_runtime.session() as session, session.begin():
        assert not move(session, VERSION, Status.PENDING, Status.ENQUEUED)


def test_timestamps_read_back_as_aware_utc(db_runtime: Runtime) -> None:
    insert(db_runtime, VERSION)
    # The same instant, written with a +02:00 offset.
    east = datetime(2025, 6, 1, 14, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    with db_runtime.session() as session, session.begin():
        move(session, VERSION, Status.PENDING, Status.ENQUEUED, 0, {"enqueued_at": east})

    enqueued_at = current(db_runtime).enqueued_at

    assert enqueued_at == datetime(2025, 6, 1, 14, 0, tzinfo=UTC)
    assert enqueued_at is not None and enqueued_at.utcoffset() == timedelta(0)
    assert current(db_runtime).created_at.tzinfo is not None


@pytest.mark.parametrize("cursor", [None, 0, 12345, "abc", {"b": 1, "a": [1, 2]}, [3, "x"]])
def test_cursors_round_trip_through_canonical_json(cursor: object) -> None:
    assert decode_cursor(encode_cursor(cursor)) == cursor


def test_equal_cursors_encode_to_equal_text() -> None:
    assert encode_cursor({"b": 1, "a": 2}) == encode_cursor({"a": 2, "b": 1}) == '{"a":2,"b":1}'


def test_as_dict_holds_every_column_json_ready(db_runtime: Runtime) -> None:
    insert(db_runtime, VERSION)
    with db_runtime.session() as session, session.begin():
        move(session, VERSION, Status.PENDING, Status.ENQUEUED, 0, {"epoch": 1})

    fields = current(db_runtime).as_dict()

    assert set(fields) == set(RECORD_FIELDS)
    assert (fields["status"], fields["epoch"]) == ("enqueued", 1)
    assert isinstance(fields["created_at"], str)
    assert datetime.fromisoformat(fields["created_at"]).tzinfo is not None
