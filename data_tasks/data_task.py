"""The data task: what a task file declares, and the batch it is run in."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

# The cursor of a one-shot or custom task whose last batch has committed.
FINISHED = {"data_tasks": "finished"}

# A check returns None when the change is really done, or a message saying what is not.
Check = Callable[[Session], str | None]
# A throttle returns how many seconds to back off before the next batch (0: go on).
Throttle = Callable[[Session], float]
# A batched task that sets no batch_size aims each batch at this many seconds: short enough
# that its row locks and its share of the WAL stay small, long enough that the per-batch
# round trips and commit cost little next to the work.
DEFAULT_TARGET_BATCH_SECONDS = 0.25
# The statuses a task's callbacks can be registered on.
NOTIFIED_STATUSES = ("succeeded", "failed", "paused", "cancelled")


@dataclass(frozen=True)
class Notice:
    """What a notification callback is told: a task reached one of NOTIFIED_STATUSES."""

    version: str
    name: str
    status: str
    from_status: str
    epoch: int
    # The task's last error when it failed, else None.
    error: str | None
    processed: int
    total: int | None
    # When the change was made (UTC).
    at: datetime
    # The change's task_history row: the same when a notice is sent again, so that a callback
    # can drop a repeat (a notice is sent at least once).
    id: int


# A callback gets the Notice once the change has committed; what it returns is ignored.
Callback = Callable[[Notice], object]


@dataclass(frozen=True)
class Batch:
    """One unit of work: what it covers and where the next one starts."""

    # Where the next batch starts; known before the batch runs, except for custom batches.
    next_cursor: Any
    # Keys or rows this batch covers, for progress.
    size: int
    # What the author's function gets: bounds, rows, or the cursor.
    payload: Any = None
    # True for a custom batch, whose function returns the next cursor itself.
    cursor_from_apply: bool = False


@dataclass(frozen=True)
class KeyRange:
    """The keys one lane covers: after `lower` (None: from the first) up to `upper` inclusive."""

    lower: Any
    upper: Any
    # How many keys or rows the range held when it was cut (None: unknown).
    total: int | None
    # True when the range is known to hold nothing: the lane is done at once.
    empty: bool = False


@dataclass(frozen=True)
class Options:
    """What every shape of data task may set."""

    # Versions this task waits for; None means every earlier version (after_party's order).
    depends_on: tuple[str, ...] | None = None
    # Keys or rows per batch (an adaptive task's first batch).
    batch_size: int = 1000
    # Aim each batch at this duration by growing or shrinking batch_size (None: fixed size).
    target_batch_seconds: float | None = None
    # The adaptive batch's bounds: a batch locks at most this many rows and writes at most
    # their WAL, whatever the target.
    min_batch_size: int = 10
    max_batch_size: int = 100_000
    # Overrides of the runner's defaults for this task.
    chunk_seconds: float | None = None
    max_attempts: int | None = None
    # Split the key range into this many lanes run side by side (1: one lane, one cursor).
    parallel: int = 1
    # Keep following rows inserted after the run started (False: stop at the largest key
    # present when the run started, so that a busy table cannot keep the run going forever).
    follow_new_rows: bool = False


class DataTask:
    """A one-time data change; the shapes below say how it is split into batches."""

    shape = "data task"

    def __init__(self, function: Callable[..., Any], options: Options) -> None:
        self.function = function
        self.options = options
        # Filled in by discovery from the file name and the module docstring.
        self.version = ""
        self.name = getattr(function, "__name__", "data_task")
        self.description = (function.__doc__ or "").strip()
        self.checks: list[Check] = []
        self.throttles: list[Throttle] = []
        # Status -> callbacks run after a change to that status has committed.
        self.callbacks: dict[str, list[Callback]] = {status: [] for status in NOTIFIED_STATUSES}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.version or '?'} {self.name}>"

    @property
    def depends_on(self) -> tuple[str, ...] | None:
        """The versions this task waits for, or None for every earlier one."""
        return self.options.depends_on

    def check(self, function: Check) -> Check:
        """Register a check that must pass before the task is marked succeeded."""
        self.checks.append(function)
        return function

    def throttle(self, function: Throttle) -> Throttle:
        """Register a throttle asked before each batch."""
        self.throttles.append(function)
        return function

    def on_succeeded(self, function: Callback) -> Callback:
        """Register a callback run after the task has succeeded."""
        return self._on("succeeded", function)

    def on_failed(self, function: Callback) -> Callback:
        """Register a callback run after the task has failed."""
        return self._on("failed", function)

    def on_paused(self, function: Callback) -> Callback:
        """Register a callback run after an operator has paused the task."""
        return self._on("paused", function)

    def on_cancelled(self, function: Callback) -> Callback:
        """Register a callback run after an operator has cancelled the task."""
        return self._on("cancelled", function)

    def _on(self, status: str, function: Callback) -> Callback:
        self.callbacks[status].append(function)
        _WITH_CALLBACKS.append(weakref.ref(self))
        return function

    def ranges(self, session: Session, parts: int) -> list[KeyRange]:
        """The key ranges of a new run, read once at its start: one lane runs each.

        Shapes without keys run as one range over everything.
        """
        return [KeyRange(lower=None, upper=None, total=None)]

    def plan(
        self, session: Session, cursor: Any, batch_size: int, upper: Any = None
    ) -> Batch | None:
        """The next batch after the cursor, up to `upper` (None: no bound), or None. Reads only."""
        raise NotImplementedError

    def apply(self, session: Session, batch: Batch) -> Any:
        """Run the author's function on the batch, in the batch's transaction."""
        raise NotImplementedError

    def failed_check(self, session: Session) -> str | None:
        """The first failing check's message, or None when all pass."""
        for check in self.checks:
            message = check(session)
            if message:
                return str(message)
        return None

    def backoff_seconds(self, session: Session) -> float:
        """The longest back-off any throttle asks for now."""
        return max((float(throttle(session)) for throttle in self.throttles), default=0.0)


# Tasks that registered callbacks, oldest first. The version is known only once discovery
# has loaded the file, so the notifier looks the task up when a change commits.
_WITH_CALLBACKS: list[weakref.ref[DataTask]] = []


def declared_task(version: str) -> DataTask | None:
    """The task of a version loaded last in this process that registered callbacks, if any."""
    _WITH_CALLBACKS[:] = [ref for ref in _WITH_CALLBACKS if ref() is not None]
    for ref in reversed(_WITH_CALLBACKS):
        task = ref()
        if task is not None and task.version == version:
            return task
    return None


@dataclass(frozen=True)
class Progress:
    """A snapshot of how far a data task has got."""

    processed: int
    total: int | None
    batches: int = 0
    rows_per_second: float | None = None
    # True while the total is an estimate (made when the run started, final once it is done).
    total_estimated: bool = False

    @property
    def percent(self) -> float | None:
        """Processed as a percentage of the estimated total."""
        if not self.total:
            return None
        return min(100.0, 100.0 * self.processed / self.total)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate."""
        if not self.total or not self.rows_per_second:
            return None
        return max(0.0, (self.total - self.processed) / self.rows_per_second)


def as_versions(depends_on: Sequence[str] | None) -> tuple[str, ...] | None:
    """Normalise a depends_on argument to a tuple of version strings."""
    if depends_on is None:
        return None
    if isinstance(depends_on, str):
        return (depends_on,)
    return tuple(str(version) for version in depends_on)
