"""Ready-made throttles: asked between batches, they say how long to back off.

    task.throttle(postgres_health("items"))

A throttle returns 0 to go on, or the seconds to wait before the next batch; the runner
waits (within its chunk budget) and asks again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from data_tasks.data_task import Throttle
from data_tasks.log import log_event

# Lag of the furthest-behind standby, seen from the primary: replay_lag while standbys report
# it, and the WAL bytes they have not replayed (flushed, for receivers that never replay).
_PRIMARY_LAG = text(
    """
    SELECT coalesce(max(extract(epoch FROM coalesce(replay_lag, flush_lag, write_lag))), 0),
           coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(),
                                        coalesce(replay_lsn, flush_lsn, write_lsn))), 0)
    FROM pg_stat_replication
    """
)
# Seen from a standby: how old the last replayed transaction is (or the server, when none has
# been replayed since it started), while received WAL is still waiting to be replayed.
_STANDBY_LAG = text(
    """
    SELECT CASE
        WHEN pg_last_wal_receive_lsn() IS NULL
             OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
        ELSE extract(epoch FROM now() - coalesce(pg_last_xact_replay_timestamp(),
                                                 pg_postmaster_start_time()))
    END
    """
)
_VACUUMING = text(
    """
    SELECT count(*) FROM pg_stat_progress_vacuum
    WHERE relid = to_regclass(:table) AND datname = current_database()
    """
)


@dataclass(frozen=True)
class Health:
    """What the PostgreSQL throttle measured."""

    lag_seconds: float
    lag_bytes: int
    vacuuming: bool


def measure_postgres(session: Session, table: str | None) -> Health:
    """Replication lag (as primary or standby) and whether `table` is being vacuumed."""
    in_recovery = bool(session.execute(text("SELECT pg_is_in_recovery()")).scalar_one())
    if in_recovery:
        lag_seconds = float(session.execute(_STANDBY_LAG).scalar_one() or 0.0)
        lag_bytes = 0
    else:
        seconds, lag = session.execute(_PRIMARY_LAG).one()
        lag_seconds, lag_bytes = float(seconds or 0.0), int(lag or 0)
    vacuuming = False
    if table:
        vacuuming = bool(session.execute(_VACUUMING, {"table": table}).scalar_one())
    return Health(lag_seconds, lag_bytes, vacuuming)


def postgres_health(
    table: str | None = None,
    *,
    max_lag_seconds: float = 10.0,
    max_lag_bytes: int = 256 * 1024 * 1024,
    backoff_seconds: float = 30.0,
) -> Throttle:
    """Back off while a standby lags (by time or WAL bytes) or while `table` is vacuumed.

    On the primary it reads pg_stat_replication; on a standby, pg_last_xact_replay_timestamp();
    a VACUUM of the table (autovacuum or manual) shows in pg_stat_progress_vacuum. Other
    databases than PostgreSQL never back off.
    """

    def throttle(session: Session) -> float:
        if session.get_bind().dialect.name != "postgresql":
            return 0.0
        health = measure_postgres(session, table)
        reasons = []
        if health.lag_seconds > max_lag_seconds:
            reasons.append(f"replication lag {health.lag_seconds:.1f}s")
        if health.lag_bytes > max_lag_bytes:
            reasons.append(f"replication lag {health.lag_bytes} bytes")
        if health.vacuuming:
            reasons.append(f"{table} is being vacuumed")
        if not reasons:
            return 0.0
        log_event("backoff", reason="; ".join(reasons), seconds=backoff_seconds)
        return backoff_seconds

    throttle.__name__ = f"postgres_health({table or ''})"
    return throttle
