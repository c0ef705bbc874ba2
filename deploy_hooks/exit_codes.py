"""What each exit code of the deploy hook and the operator commands means."""

from __future__ import annotations

import sys

from data_tasks.errors import (
    DataTaskError,
    DependencyError,
    InvalidTaskFile,
    InvalidUrl,
    MissingDatabase,
    ServiceUnavailable,
)

OK = 0
# A command on an unknown version, an illegal transition, a wait that saw a task fail.
FAILED = 1
# A task file or a dependency is invalid: fix the code, redeploy.
INVALID_TASKS = 2
# The records database cannot be reached.
DATABASE_UNREACHABLE = 3
# Redis cannot be reached.
REDIS_UNREACHABLE = 4
# `wait` ran out of time with nothing failed: the tasks are still running.
TIMED_OUT = 5
# A usage or configuration error: a bad option, no database named.
USAGE = 64


def exit_code(error: DataTaskError) -> int:
    """The exit code for a domain error."""
    if isinstance(error, ServiceUnavailable):
        return DATABASE_UNREACHABLE if error.service == "database" else REDIS_UNREACHABLE
    if isinstance(error, InvalidUrl):
        return USAGE
    if isinstance(error, InvalidTaskFile | DependencyError):
        return INVALID_TASKS
    if isinstance(error, MissingDatabase):
        return USAGE
    return FAILED


def fail(error: DataTaskError) -> int:
    """Print the error as one line on stderr and return its exit code."""
    print(f"error: {error}", file=sys.stderr)
    return exit_code(error)
