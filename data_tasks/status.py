"""The status of a data task and the only edges it may move along."""

from __future__ import annotations

from enum import StrEnum

from data_tasks.errors import InvalidTransition


class Status(StrEnum):
    """Where a data task is in its life."""

    PENDING = "pending"
    ENQUEUED = "enqueued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_done(self) -> bool:
        """True when the task will never run again on its own and its dependents may start."""
        return self in DONE

    @property
    def is_terminal(self) -> bool:
        """True when only an operator's explicit rerun moves the task again."""
        return self in TERMINAL

    @property
    def is_in_flight(self) -> bool:
        """True when a chunk job is queued or running for the task."""
        return self in (Status.ENQUEUED, Status.RUNNING)


DONE = frozenset({Status.SUCCEEDED, Status.SKIPPED})
TERMINAL = frozenset({Status.SUCCEEDED, Status.SKIPPED, Status.CANCELLED})

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset(
        {
            Status.ENQUEUED,  # the deploy hook (or a finishing predecessor) claims it
            Status.CANCELLED,  # operator: never run it
            Status.SKIPPED,  # operator: mark done without running (a new environment's baseline)
        }
    ),
    Status.ENQUEUED: frozenset(
        {
            Status.RUNNING,  # a chunk job with the current epoch starts
            Status.ENQUEUED,  # the sweep re-publishes a job whose message was lost
            Status.FAILED,  # the worker cannot load the task file
            Status.PAUSED,  # operator
            Status.CANCELLED,  # operator
        }
    ),
    Status.RUNNING: frozenset(
        {
            Status.SUCCEEDED,  # the data is exhausted and the check passed
            Status.ENQUEUED,  # budget spent, warm shutdown, retry after an error, stale reclaim
            Status.FAILED,  # attempts exhausted, or the check failed; cursor and traceback kept
            Status.PAUSED,  # operator
            Status.CANCELLED,  # operator
        }
    ),
    Status.PAUSED: frozenset(
        {
            Status.ENQUEUED,  # operator resumes it at its cursor
            Status.CANCELLED,  # operator
        }
    ),
    Status.FAILED: frozenset(
        {
            Status.ENQUEUED,  # `retry`, or a deploy whose file changed: resumes at its cursor
            Status.SKIPPED,  # operator: give up on it but let dependents run
            Status.CANCELLED,  # operator
        }
    ),
    # Done and cancelled tasks move again only at an operator's `rerun --yes`.
    Status.SUCCEEDED: frozenset({Status.ENQUEUED}),
    Status.SKIPPED: frozenset({Status.ENQUEUED}),
    Status.CANCELLED: frozenset({Status.ENQUEUED}),
}


def check_transition(version: str, from_: Status, to: Status) -> None:
    """Raise InvalidTransition unless the table allows moving from `from_` to `to`."""
    if to not in TRANSITIONS[from_]:
        raise InvalidTransition(version, from_.value, to.value)
