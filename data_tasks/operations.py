"""What operators do to data tasks: the Python API under `python -m deploy_hooks`.

Every status change goes through records.move; every claim goes through the scheduler's
claim-and-publish, so an operator's retry, resume or rerun is fenced like a deploy's.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

# The dry run is part of this API, in a module of its own.
from data_tasks.dry_run import DryRunBatch as DryRunBatch
from data_tasks.dry_run import DryRunReport as DryRunReport
from data_tasks.dry_run import dry_run as dry_run
from data_tasks.errors import DataTaskError, InvalidTransition, UnknownVersion
from data_tasks.history import TaskHistory, acting, entries, operator
from data_tasks.log import first_line, log_event
from data_tasks.overview import TaskView, overview
from data_tasks.publisher import ChunkMessage, Publisher
from data_tasks.records import TaskRecord, insert_missing, load_all, move, utcnow
from data_tasks.runner import run_chunk
from data_tasks.runtime import Runtime
from data_tasks.scheduler import Claim, Enqueued, claim_and_publish
from data_tasks.status import Status

# What a rerun clears, so that the new epoch starts from the beginning.
RESTART: dict[str, object] = {
    "processed": 0,
    "total": None,
    "attempts": 0,
    "last_error": None,
    "traceback": None,
    "started_at": None,
    "heartbeat_at": None,
    "finished_at": None,
    "worker": None,
}
NOT_TERMINAL = frozenset(
    {Status.PENDING, Status.ENQUEUED, Status.RUNNING, Status.PAUSED, Status.FAILED}
)
RERUNNABLE = frozenset(
    {Status.SUCCEEDED, Status.SKIPPED, Status.CANCELLED, Status.FAILED, Status.PAUSED}
)


def status(runtime: Runtime) -> list[TaskView]:
    """Every data task with its progress and what it waits on, in version order."""
    return overview(runtime.engine, runtime.settings.tasks_dirs)


def show(runtime: Runtime, version: str) -> TaskView:
    """One data task's whole record, traceback included."""
    for view in status(runtime):
        if view.record.version == version:
            return view
    raise UnknownVersion(version)


def history(
    runtime: Runtime, version: str | None = None, limit: int | None = None
) -> list[TaskHistory]:
    """The status changes and operator commands of one task or of all, newest first."""
    if version is not None:
        _record(runtime, version)
    runtime.create_tables()
    with runtime.session() as session:
        return entries(session, version, limit)


def retry(runtime: Runtime, version: str, actor: str | None = None) -> Enqueued:
    """Hand a failed task to the workers again; it resumes at its cursor."""
    reason = "retried: resumes at its cursor"
    return _claim(runtime, version, {Status.FAILED}, "retry", reason, actor=actor)


def resume(runtime: Runtime, version: str, actor: str | None = None) -> Enqueued:
    """Hand a paused task to the workers again; it resumes at its cursor."""
    reason = "resumed at its cursor"
    return _claim(runtime, version, {Status.PAUSED}, "resume", reason, actor=actor)


def rerun(runtime: Runtime, version: str, actor: str | None = None) -> Enqueued:
    """Run a task again from the beginning, in a new epoch (every batch is applied again)."""
    reason = "rerun from the beginning"
    return _claim(runtime, version, RERUNNABLE, "rerun", reason, RESTART, actor=actor)


def pause(runtime: Runtime, version: str, actor: str | None = None) -> Status:
    """Stop a queued or running task after its current batch; returns the status it left."""
    sources = {Status.ENQUEUED, Status.RUNNING}
    return _move(runtime, version, sources, Status.PAUSED, "pause", actor)


def cancel(runtime: Runtime, version: str, actor: str | None = None) -> Status:
    """Never run a task (further); returns the status it left. `rerun` can revive it."""
    return _move(runtime, version, NOT_TERMINAL, Status.CANCELLED, "cancel", actor)


def skip(
    runtime: Runtime,
    versions: Sequence[str] = (),
    all_pending: bool = False,
    actor: str | None = None,
) -> list[str]:
    """Record tasks as done without running them; returns the versions it marked."""
    records = _reconcile(runtime)
    if all_pending:
        targets = [v for v, record in sorted(records.items()) if record.state == Status.PENDING]
    else:
        targets = list(dict.fromkeys(versions))
        for version in targets:
            if version not in records:
                raise UnknownVersion(version)
            _require(records[version], {Status.PENDING, Status.FAILED}, Status.SKIPPED, "skip")
    marked: list[str] = []
    actor = operator(actor)
    with acting(actor, "skip"), runtime.session() as session, session.begin():
        for version in targets:
            record = records[version]
            values = {"finished_at": utcnow()}
            if move(session, version, record.state, Status.SKIPPED, record.epoch, values):
                marked.append(version)
            elif not all_pending:
                raise _moved_meanwhile(runtime, version, Status.SKIPPED, "skip")
    for version in marked:
        epoch = records[version].epoch
        log_event("operator", command="skip", version=version, epoch=epoch, actor=actor)
    return marked


@dataclass(frozen=True)
class WaitOutcome:
    """How a wait ended: every version done, one failed or blocked, or time ran out."""

    done: list[str]
    # Version -> why it will not succeed without an operator (failed, cancelled, blocked).
    failed: dict[str, str]
    unfinished: list[str]

    @property
    def succeeded(self) -> bool:
        """True when every version waited on is done."""
        return not self.failed and not self.unfinished

    @property
    def timed_out(self) -> bool:
        """True when time ran out with nothing failed."""
        return not self.failed and bool(self.unfinished)


def wait(
    runtime: Runtime,
    versions: Sequence[str] = (),
    timeout: float = 600.0,
    poll_seconds: float = 1.0,
    on_poll: Callable[[list[TaskView]], None] | None = None,
) -> WaitOutcome:
    """Wait until the versions (or every task) are done, one fails, or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        views = {view.record.version: view for view in status(runtime)}
        targets = list(versions) or sorted(views)
        for version in targets:
            if version not in views:
                raise UnknownVersion(version)
        outcome = _wait_outcome(views, targets)
        if on_poll is not None:
            on_poll([views[version] for version in targets])
        left = deadline - time.monotonic()
        if outcome.failed or not outcome.unfinished or left <= 0:
            return outcome
        time.sleep(min(poll_seconds, left))


def _wait_outcome(views: dict[str, TaskView], targets: list[str]) -> WaitOutcome:
    done: list[str] = []
    failed: dict[str, str] = {}
    unfinished: list[str] = []
    for version in targets:
        record = views[version].record
        blockers = [
            dep
            for dep in views[version].waiting_on
            if views[dep].record.state in (Status.FAILED, Status.CANCELLED)
        ]
        if record.state.is_done:
            done.append(version)
        elif record.state == Status.FAILED:
            failed[version] = "failed: " + (record.last_error or "no error recorded")
        elif record.state == Status.CANCELLED:
            failed[version] = "cancelled"
        elif blockers:
            failed[version] = "blocked by " + ", ".join(
                f"{dep} ({views[dep].record.status})" for dep in blockers
            )
        else:
            unfinished.append(version)
    return WaitOutcome(done, failed, unfinished)


class InlinePublisher:
    """Keeps one version's chunk jobs for this process to run; passes others to the workers."""

    def __init__(self, version: str, fallback: Publisher) -> None:
        self.version = version
        self.fallback = fallback
        self.queue: deque[tuple[ChunkMessage, float]] = deque()

    def publish(self, message: ChunkMessage, countdown: float = 0.0) -> None:
        """Keep the job if it is ours, else hand it to the fallback publisher."""
        if message.version == self.version:
            self.queue.append((message, countdown))
        else:
            self.fallback.publish(message, countdown)


@dataclass
class InlineRun:
    """What `run --inline` did: one summary per chunk, and the record at the end."""

    version: str
    chunks: list[dict[str, Any]] = field(default_factory=list)
    record: TaskRecord | None = None
    # True when it stopped early and handed the rest to the workers.
    handed_over: bool = False

    @property
    def status(self) -> Status:
        """The task's status when the run ended."""
        assert self.record is not None
        return self.record.state


def _never() -> bool:
    return False


def run_inline(
    runtime: Runtime,
    version: str,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] = _never,
    batches_per_chunk: int | None = None,
    ignore_dependencies: bool = False,
    actor: str | None = None,
) -> InlineRun:
    """Run a task in this process, chunk after chunk, through the same runner and records.

    Chunks end at the settings' time budget, or after `batches_per_chunk` batches (to prove in
    a test that resuming neither skips nor repeats a row). When `should_stop` turns true, the
    current batch finishes and the rest is handed to the workers through the runtime's
    publisher; so are the tasks this one unblocks.
    """
    if batches_per_chunk is not None and batches_per_chunk < 1:
        raise ValueError(f"batches_per_chunk must be at least 1, not {batches_per_chunk}")
    inline = InlinePublisher(version, runtime.publisher)
    asked = 0

    def stop_now() -> bool:
        # The runner asks before each batch after a chunk's first one.
        nonlocal asked
        asked += 1
        return should_stop() or (batches_per_chunk is not None and asked >= batches_per_chunk)

    local = replace(runtime, publisher=inline, should_stop=stop_now, on_progress=on_progress)
    record = _record(runtime, version)
    # A queued task is claimed too: its new epoch fences off the copy in the broker.
    allowed = {Status.PENDING, Status.FAILED, Status.PAUSED, Status.ENQUEUED}
    _require(record, allowed, Status.ENQUEUED, "run")
    if record.state == Status.PENDING and not ignore_dependencies:
        blockers = show(runtime, version).waiting_on
        if blockers:
            raise DataTaskError(
                f"data task {version} waits on {', '.join(blockers)}: run or skip those first"
            )
    _claim(local, version, allowed, "run", "run inline", actor=actor)
    result = InlineRun(version)
    while inline.queue:
        message, countdown = inline.queue.popleft()
        if should_stop():
            runtime.publisher.publish(message, countdown)
            result.handed_over = True
            break
        if countdown:
            time.sleep(countdown)
        asked = 0
        summary = run_chunk(local, message)
        result.chunks.append(summary)
        if on_chunk is not None:
            on_chunk(summary)
    with runtime.session() as session:
        result.record = session.get(TaskRecord, version)
    return result


def _claim(
    runtime: Runtime,
    version: str,
    allowed: Collection[Status],
    command: str,
    reason: str,
    reset: dict[str, object] | None = None,
    actor: str | None = None,
) -> Enqueued:
    """Claim a task with a new epoch and publish its chunk job, as the deploy hook does."""
    record = _record(runtime, version)
    _require(record, allowed, Status.ENQUEUED, command)
    digest = runtime.catalog.file(version).source_hash()
    actor = operator(actor)
    with acting(actor, command):
        won = claim_and_publish(runtime, [Claim(record, record.state, reason, digest)], reset)
    if not won:
        raise _moved_meanwhile(runtime, version, Status.ENQUEUED, command)
    log_event("operator", command=command, version=version, epoch=won[0].epoch, actor=actor)
    return won[0]


def _move(
    runtime: Runtime,
    version: str,
    sources: Collection[Status],
    to: Status,
    command: str,
    actor: str | None,
) -> Status:
    """Move a task from whichever of the sources it is in; returns the one it left."""
    values: dict[str, Any] = {}
    if to in (Status.CANCELLED, Status.SKIPPED):
        values = {"finished_at": utcnow()}
    actor = operator(actor)
    _load_callbacks(runtime, version)
    for _ in range(3):  # a runner may move it between our read and our write: read again
        record = _record(runtime, version)
        _require(record, sources, to, command)
        with acting(actor, command), runtime.session() as session, session.begin():
            moved = move(session, version, record.state, to, None, values)
        if moved:
            log_event("operator", command=command, version=version, epoch=record.epoch, actor=actor)
            return record.state
    raise _moved_meanwhile(runtime, version, to, command)


def _load_callbacks(runtime: Runtime, version: str) -> None:
    """Import the task file, so that its own callbacks hear of the operator's change."""
    try:
        runtime.catalog.task(version)
    except Exception as error:
        # A broken or missing file must not stop a pause or a cancel: global callbacks still run.
        log_event("callbacks_not_loaded", version=version, error=first_line(error))


def _require(record: TaskRecord, allowed: Collection[Status], to: Status, command: str) -> None:
    if record.state not in allowed:
        raise InvalidTransition(record.version, record.status, to.value, command=command)


def _moved_meanwhile(runtime: Runtime, version: str, to: Status, command: str) -> InvalidTransition:
    """The error for a record another process moved between our read and our write."""
    record = _record(runtime, version)
    return InvalidTransition(version, record.status, to.value, command=command)


def _record(runtime: Runtime, version: str) -> TaskRecord:
    """The record of a version; a task file not yet recorded gets its pending record first."""
    runtime.create_tables()
    with runtime.session() as session:
        record = session.get(TaskRecord, version)
    if record is not None:
        return record
    try:
        runtime.catalog.file(version)
    except DataTaskError:
        raise UnknownVersion(version) from None
    return _reconcile(runtime)[version]


def _reconcile(runtime: Runtime) -> dict[str, TaskRecord]:
    """Every record, after inserting pending ones for task files not yet recorded."""
    runtime.create_tables()
    files = runtime.catalog.files(refresh=True)
    with runtime.session() as session, session.begin():
        records = load_all(session)
        missing = [(v, task_file.name) for v, task_file in files.items() if v not in records]
        if missing:
            insert_missing(session, missing)
    if missing:
        with runtime.session() as session:
            records = load_all(session)
    return records
