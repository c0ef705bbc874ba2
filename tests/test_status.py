"""The status machine: every edge in the table is allowed, every other one refused by name."""

from __future__ import annotations

import itertools

import pytest

from data_tasks.errors import InvalidTransition
from data_tasks.status import TRANSITIONS, Status, check_transition

ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)]
REFUSED = [(a, b) for a, b in itertools.product(Status, Status) if b not in TRANSITIONS[a]]


def test_every_status_has_a_row_in_the_table() -> None:
    assert set(TRANSITIONS) == set(Status)


def test_the_documented_life_of_a_task_is_allowed() -> None:
    life = [
        Status.PENDING,
        Status.ENQUEUED,
        Status.RUNNING,
        Status.ENQUEUED,  # budget spent: the successor chunk
        Status.RUNNING,
        Status.FAILED,
        Status.ENQUEUED,  # next deploy with a fixed file
        Status.RUNNING,
        Status.PAUSED,
        Status.ENQUEUED,
        Status.RUNNING,
        Status.SUCCEEDED,
    ]
    for from_, to in itertools.pairwise(life):
        check_transition("20250101000000", from_, to)


@pytest.mark.parametrize(("from_", "to"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_an_edge_in_the_table_is_allowed(from_: Status, to: Status) -> None:
    check_transition("20250101000000", from_, to)


@pytest.mark.parametrize(("from_", "to"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
def test_an_edge_not_in_the_table_is_refused_naming_both_ends(from_: Status, to: Status) -> None:
    with pytest.raises(InvalidTransition) as raised:
        check_transition("20250101000000", from_, to)

    assert (raised.value.version, raised.value.from_, raised.value.to) == (
        "20250101000000",
        from_.value,
        to.value,
    )
    assert str(raised.value) == f"data task 20250101000000: cannot go from {from_} to {to}"


def test_the_edges_the_design_forbids_are_refused() -> None:
    for from_, to in [
        (Status.PENDING, Status.RUNNING),  # only a claimed (enqueued) task starts
        (Status.PENDING, Status.SUCCEEDED),
        (Status.SUCCEEDED, Status.RUNNING),
        (Status.SUCCEEDED, Status.FAILED),
        (Status.RUNNING, Status.PENDING),
        (Status.RUNNING, Status.SKIPPED),  # skipping a task a worker is changing would lie
    ]:
        with pytest.raises(InvalidTransition):
            check_transition("20250101000000", from_, to)


def test_done_terminal_and_in_flight_sets() -> None:
    assert {s for s in Status if s.is_done} == {Status.SUCCEEDED, Status.SKIPPED}
    assert {s for s in Status if s.is_terminal} == {
        Status.SUCCEEDED,
        Status.SKIPPED,
        Status.CANCELLED,
    }
    assert {s for s in Status if s.is_in_flight} == {Status.ENQUEUED, Status.RUNNING}
