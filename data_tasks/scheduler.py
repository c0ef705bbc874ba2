"""The deploy hook's work: reconcile files with records, then claim and enqueue what may run.

The same pass is the sweep: it re-publishes jobs whose message was lost and reclaims runs
whose worker died, so running it from cron or celery beat keeps everything moving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from redis.exceptions import LockError, RedisError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from data_tasks.coordination import unavailable
from data_tasks.data_task import DataTask
from data_tasks.database import check_reachable
from data_tasks.discovery import TaskFile, discover, load
from data_tasks.errors import DependencyError, ServiceUnavailable
from data_tasks.log import log_event
from data_tasks.publisher import ChunkMessage
from data_tasks.records import TaskRecord, insert_missing, load_all, move, utcnow
from data_tasks.runtime import Runtime
from data_tasks.settings import redact
from data_tasks.status import Status


@dataclass(frozen=True)
class Enqueued:
    """One chunk job the hook published."""

    version: str
    name: str
    epoch: int
    reason: str


@dataclass
class EnqueueReport:
    """What one pass of the deploy hook found and did."""

    enqueued: list[Enqueued] = field(default_factory=list)
    # Versions not done, by what they still wait on.
    waiting: dict[str, list[str]] = field(default_factory=dict)
    in_flight: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    new_records: int = 0


def dependencies(
    versions: Iterable[str], explicit: Mapping[str, tuple[str, ...] | None]
) -> dict[str, tuple[str, ...]]:
    """Each version's dependencies: its explicit list, or else every earlier version.

    Raises DependencyError for an unknown version or a cycle.
    """
    ordered = sorted(versions)
    known = set(ordered)
    result: dict[str, tuple[str, ...]] = {}
    for index, version in enumerate(ordered):
        declared = explicit.get(version)
        if declared is None:
            result[version] = tuple(ordered[:index])
            continue
        unknown = [dep for dep in declared if dep not in known]
        if unknown:
            raise DependencyError(f"data task {version} depends on unknown version(s) {unknown}")
        result[version] = tuple(declared)
    _refuse_cycles(result, explicit)
    return result


def _refuse_cycles(graph: Mapping[str, tuple[str, ...]], explicit: Mapping[str, object]) -> None:
    """Depth-first search from every explicit declaration; a back edge is a cycle."""
    state: dict[str, int] = {}  # 1: on the path, 2: finished

    def visit(version: str, path: list[str]) -> None:
        state[version] = 1
        for dep in graph.get(version, ()):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [version, dep]
                raise DependencyError("dependency cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[version] = 2

    for version in sorted(v for v in explicit if explicit[v] is not None):
        if version not in state:
            visit(version, [version])


def waiting_on(
    version: str, deps: Mapping[str, tuple[str, ...]], statuses: Mapping[str, Status]
) -> list[str]:
    """The dependencies of a version that are not done yet."""
    return [dep for dep in deps.get(version, ()) if not statuses[dep].is_done]


def enqueue(runtime: Runtime) -> EnqueueReport:
    """One pass of the deploy hook; raises ServiceUnavailable, InvalidTaskFile, DependencyError."""
    settings = runtime.settings
    files = {task_file.version: task_file for task_file in discover(settings.tasks_dir)}
    check_reachable(runtime.engine)
    try:
        lock = runtime.coordinator.hook_lock()
        if not lock.acquire():
            raise ServiceUnavailable(
                "Redis", redact(settings.redis_url), "another deploy hook held its lock for 15 s"
            )
    except RedisError as error:
        raise unavailable(settings, error) from None
    try:
        try:
            # Under the hook lock: concurrent CREATE TABLEs on a fresh database collide.
            runtime.create_tables()
        except DBAPIError as error:
            reason = str(error.orig or error).strip().splitlines()[0]
            raise ServiceUnavailable("database", str(runtime.engine.url), reason) from None
        return _enqueue_locked(runtime, files)
    except RedisError as error:
        raise unavailable(settings, error) from None
    finally:
        try:
            lock.release()
        except (RedisError, LockError):
            pass  # The lock expires by itself; the records stay right either way.


def _enqueue_locked(runtime: Runtime, files: Mapping[str, TaskFile]) -> EnqueueReport:
    report = EnqueueReport()
    with runtime.session() as session:
        records = load_all(session)
    # Only files that may still run are imported: done ones cost a directory entry, nothing
    # more. They are imported, and their dependencies checked, before anything is written,
    # so an invalid file or dependency stops the hook with nothing recorded.
    tasks: dict[str, DataTask] = {
        v: load(f) for v, f in files.items() if v not in records or not records[v].state.is_done
    }
    deps = dependencies(set(records) | set(files), {v: t.depends_on for v, t in tasks.items()})
    missing = [(v, f.name) for v, f in files.items() if v not in records]
    if missing:
        with runtime.session() as session, session.begin():
            report.new_records = insert_missing(session, missing)
        # Only the new rows are read back: the others were just read, and reading every
        # record twice cost a deploy hook on a large directory more than all else it does.
        inserted = select(TaskRecord).where(TaskRecord.version.in_([v for v, _ in missing]))
        with runtime.session() as session:
            records.update({record.version: record for record in session.scalars(inserted)})

    statuses = {version: record.state for version, record in records.items()}
    open_versions = [v for v, s in statuses.items() if not s.is_done]
    report.missing_files = sorted(v for v in open_versions if v not in files)

    claims: list[tuple[TaskRecord, Status, str, TaskFile]] = []
    stale_candidates: list[TaskRecord] = []
    queued_versions = [v for v in tasks if statuses[v] == Status.ENQUEUED]
    queued = runtime.coordinator.queued_epochs(queued_versions)
    for version in sorted(tasks):
        record, status, task_file = records[version], statuses[version], files[version]
        blocked_by = waiting_on(version, deps, statuses)
        if status == Status.PENDING:
            if blocked_by:
                report.waiting[version] = blocked_by
            else:
                claims.append((record, status, "new", task_file))
        elif status == Status.FAILED:
            if not blocked_by and record.source_hash != task_file.source_hash():
                claims.append((record, status, "resumed: its file changed", task_file))
            else:
                report.failed.append(version)
        elif status == Status.ENQUEUED:
            if queued.get(version) != record.epoch:
                claims.append((record, status, "re-published: its job was lost", task_file))
            else:
                report.in_flight.append(version)
        elif status == Status.RUNNING:
            stale_candidates.append(record)

    stale_before = utcnow() - timedelta(seconds=runtime.settings.stale_seconds)
    locked = runtime.coordinator.locked_versions(r.version for r in stale_candidates)
    for record in stale_candidates:
        beat = record.heartbeat_at or record.started_at
        if record.version not in locked and (beat is None or beat < stale_before):
            reason = "reclaimed: its worker stopped beating"
            claims.append((record, Status.RUNNING, reason, files[record.version]))
        else:
            report.in_flight.append(record.version)

    report.enqueued = claim_and_publish(runtime, claims)
    report.in_flight.sort()
    return report


def claim_and_publish(
    runtime: Runtime,
    claims: list[tuple[TaskRecord, Status, str, TaskFile]],
    reset: Mapping[str, object] | None = None,
) -> list[Enqueued]:
    """Claim each record with a new epoch, then publish one job per successful claim.

    The queued markers are written first: if Redis is down, nothing is claimed; if a
    publish fails after the claim, the next pass sees no job and publishes again.
    `reset` holds fields written with the claim (a rerun starts again from the beginning).
    """
    if not claims:
        return []
    runtime.coordinator.mark_queued({record.version: record.epoch + 1 for record, *_ in claims})
    won: list[Enqueued] = []
    now = utcnow()
    with runtime.session() as session, session.begin():
        for record, status, reason, task_file in claims:
            values: dict[str, object] = {"epoch": record.epoch + 1, "enqueued_at": now}
            if status in (Status.PENDING, Status.FAILED):
                values.update(attempts=0, source_hash=task_file.source_hash())
            values.update(reset or {})
            if move(session, record.version, status, Status.ENQUEUED, record.epoch, values):
                won.append(Enqueued(record.version, record.name, record.epoch + 1, reason))
    for index, item in enumerate(won):
        try:
            runtime.publisher.publish(ChunkMessage(item.version, item.epoch))
        except Exception as error:
            # Claimed but not published: drop the markers, so the next pass publishes them.
            _forget_markers(runtime, [left.version for left in won[index:]])
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ServiceUnavailable(
                "Redis", redact(runtime.settings.redis_url), f"publishing failed: {reason}"
            ) from None
        log_event("enqueued", version=item.version, epoch=item.epoch, reason=item.reason)
    return won


def _forget_markers(runtime: Runtime, versions: list[str]) -> None:
    """Best effort: without its marker, an enqueued record is re-published by the next pass."""
    try:
        prefix = runtime.coordinator.prefix
        runtime.coordinator.client.delete(*[f"{prefix}:queued:{v}" for v in versions])
    except RedisError:
        pass  # Redis itself is gone, and its markers with it.
