"""The deploy hook's work: reconcile files with records, then claim and enqueue what may run.

The same pass is the sweep: it re-publishes jobs whose message was lost and reclaims runs
whose worker died, so running it from cron or celery beat keeps everything moving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from redis.exceptions import LockError, RedisError
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from data_tasks.coordination import unavailable
from data_tasks.data_task import DataTask
from data_tasks.database import check_reachable, database_error
from data_tasks.discovery import TaskFile, discover, load
from data_tasks.errors import DependencyError, ServiceUnavailable
from data_tasks.lanes import LaneStatus, TaskLane, prepare_run
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
    files = {task_file.version: task_file for task_file in discover(settings.tasks_dirs)}
    check_reachable(runtime.engine)
    try:
        lock = runtime.coordinator.hook_lock()
        # Raises PassRunning when another pass holds it past the wait: that pass does the work.
        lock.acquire()
    except RedisError as error:
        raise unavailable(settings, error) from None
    try:
        try:
            # Under the hook lock: concurrent CREATE TABLEs (and upgrades) would collide.
            runtime.create_tables()
        except DBAPIError as error:
            raise database_error(settings.database_url, error) from None
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

    claims: list[Claim] = []
    in_flight: list[str] = []
    for version in sorted(tasks):
        record, status, task_file = records[version], statuses[version], files[version]
        blocked_by = waiting_on(version, deps, statuses)
        if status == Status.PENDING:
            if blocked_by:
                report.waiting[version] = blocked_by
            else:
                claims.append(Claim(record, status, "new", task_file.source_hash()))
        elif status == Status.FAILED:
            if not blocked_by and record.source_hash != task_file.source_hash():
                claims.append(
                    Claim(record, status, "resumed: its file changed", task_file.source_hash())
                )
            else:
                report.failed.append(version)
        elif status.is_in_flight:
            in_flight.append(version)
    _follow_new_files(runtime, {v: records[v] for v in in_flight}, files)
    report.enqueued = claim_and_publish(runtime, claims)
    report.enqueued += _keep_lanes_going(runtime, {v: records[v] for v in in_flight}, files)
    report.in_flight = sorted(set(in_flight) - {item.version for item in report.enqueued})
    return report


def _follow_new_files(
    runtime: Runtime, records: Mapping[str, TaskRecord], files: Mapping[str, TaskFile]
) -> None:
    """Record the deployed file of a running task, so that only workers that have it run it."""
    changed = {
        version: files[version].source_hash()
        for version, record in records.items()
        if record.source_hash != files[version].source_hash()
    }
    if not changed:
        return
    with runtime.session() as session, session.begin():
        for version, digest in changed.items():
            session.execute(
                update(TaskRecord)
                .where(TaskRecord.version == version)
                .values(source_hash=digest)
                .execution_options(synchronize_session=False)
            )


def _keep_lanes_going(
    runtime: Runtime, records: Mapping[str, TaskRecord], files: Mapping[str, TaskFile]
) -> list[Enqueued]:
    """Publish again the jobs of enqueued lanes that were lost, and reclaim dead lanes.

    A lane is dead when it is running, its lease has lapsed and its heartbeat is older than
    the stale time. It is moved back to enqueued only if no batch holds its row (SKIP LOCKED),
    so a pass never waits on a running batch; its next chunk starts at a new epoch, which
    fences the old runner should it wake up.
    """
    if not records:
        return []
    with runtime.session() as session:
        lanes = list(session.scalars(select(TaskLane).where(TaskLane.version.in_(list(records)))))
    by_version: dict[str, list[TaskLane]] = {}
    for lane in lanes:
        by_version.setdefault(lane.version, []).append(lane)
    # A run with no lane left to run (its start was cut short) is claimed again as a whole.
    stranded = [
        Claim(record, record.state, "resumed: no lane was running", files[version].source_hash())
        for version, record in records.items()
        if not any(
            lane.state in (LaneStatus.ENQUEUED, LaneStatus.RUNNING)
            for lane in by_version.get(version, [])
        )
    ]
    won = claim_and_publish(runtime, stranded)
    queued_lanes = [lane for lane in lanes if lane.state == LaneStatus.ENQUEUED]
    markers = runtime.coordinator.queued_epochs((lane.version, lane.lane) for lane in queued_lanes)
    lost = [lane for lane in queued_lanes if markers[(lane.version, lane.lane)] != lane.epoch]
    running = [lane for lane in lanes if lane.state == LaneStatus.RUNNING]
    held = runtime.coordinator.held_leases((lane.version, lane.lane) for lane in running)
    stale_before = utcnow() - timedelta(seconds=runtime.settings.stale_seconds)
    dead = [
        lane
        for lane in running
        if (lane.version, lane.lane) not in held
        and (lane.heartbeat_at is None or lane.heartbeat_at < stale_before)
    ]
    revived = reclaim(runtime, dead)
    messages = [
        ChunkMessage(lane.version, lane.epoch, lane=lane.lane) for lane in [*lost, *revived]
    ]
    _publish(runtime, messages)
    for lane in lost:
        log_event("republished", version=lane.version, lane=lane.lane, epoch=lane.epoch)
    for lane in revived:
        log_event("reclaimed", version=lane.version, lane=lane.lane, epoch=lane.epoch)
    reasons = {lane.version: "re-published: its job was lost" for lane in lost}
    reasons.update({lane.version: "reclaimed: its worker stopped beating" for lane in revived})
    return won + [
        Enqueued(version, records[version].name, records[version].epoch, reason)
        for version, reason in sorted(reasons.items())
    ]


def reclaim(runtime: Runtime, lanes: list[TaskLane]) -> list[TaskLane]:
    """Move dead running lanes back to enqueued, skipping any whose row a batch holds."""
    if not lanes:
        return []
    revived: list[TaskLane] = []
    with runtime.session() as session, session.begin():
        for lane in lanes:
            free = session.execute(
                select(TaskLane.lane)
                .where(TaskLane.version == lane.version, TaskLane.lane == lane.lane)
                .where(TaskLane.epoch == lane.epoch)
                .where(TaskLane.status == LaneStatus.RUNNING.value)
                .with_for_update(skip_locked=True)
            ).first()
            if free is None:
                continue
            session.execute(
                update(TaskLane)
                .where(TaskLane.version == lane.version, TaskLane.lane == lane.lane)
                .values(status=LaneStatus.ENQUEUED.value)
                .execution_options(synchronize_session=False)
            )
            revived.append(lane)
    return revived


@dataclass(frozen=True)
class Claim:
    """A record to claim with a new run epoch, why, and the hash of the file it will run."""

    record: TaskRecord
    status: Status
    reason: str
    source_hash: str | None


def claim_and_publish(
    runtime: Runtime, claims: Sequence[Claim], restart: Mapping[str, object] | None = None
) -> list[Enqueued]:
    """Claim each record with a new run epoch and enqueue its lanes, then publish their jobs.

    `restart` holds record fields written with the claim; when given, the run starts again
    from the beginning with new lanes (a rerun). A job whose publish fails has no queued
    marker, so the next pass publishes it again.
    """
    if not claims:
        return []
    try:
        # Claim nothing while Redis cannot take the jobs; should it fail between the claim and
        # the publish all the same, the next pass publishes what has no queued marker.
        runtime.coordinator.client.ping()
    except RedisError as error:
        raise unavailable(runtime.settings, error) from None
    won: list[Enqueued] = []
    messages: list[ChunkMessage] = []
    now = utcnow()
    with runtime.session() as session, session.begin():
        for claim in claims:
            record = claim.record
            values: dict[str, object] = {"epoch": record.epoch + 1, "enqueued_at": now}
            if claim.status in (Status.PENDING, Status.FAILED) or restart is not None:
                values["attempts"] = 0
            if claim.source_hash is not None:
                values["source_hash"] = claim.source_hash
            values.update(restart or {})
            if move(session, record.version, claim.status, Status.ENQUEUED, record.epoch, values):
                lanes = prepare_run(session, record.version, restart is not None)
                messages += [
                    ChunkMessage(record.version, epoch, lane=lane) for lane, epoch in lanes
                ]
                won.append(Enqueued(record.version, record.name, record.epoch + 1, claim.reason))
    runtime.step("claimed")
    _publish(runtime, messages)
    for item in won:
        log_event("enqueued", version=item.version, epoch=item.epoch, reason=item.reason)
    return won


def _publish(runtime: Runtime, messages: list[ChunkMessage]) -> None:
    """Publish claimed jobs; a failure is the hook's one-line error, and the next pass retries."""
    try:
        runtime.publish(messages)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ServiceUnavailable(
            "Redis", redact(runtime.settings.redis_url), f"publishing failed: {reason}"
        ) from None
