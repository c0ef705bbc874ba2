"""The one settings object, read from the environment once at the edges and passed explicitly."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

from data_tasks.errors import MissingDatabase

# The broker and the locks.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# PostgreSQL's values of synchronous_commit; "" keeps the server's own.
SYNCHRONOUS_COMMIT = ("off", "local", "remote_write", "on", "remote_apply", "")


@dataclass(frozen=True)
class Settings:
    """Configuration of the runner, the deploy hook and the worker."""

    # Where the records (and, for exactly-once batches, the data) live; no default on purpose.
    database_url: str = ""
    redis_url: str = DEFAULT_REDIS_URL
    # The folder of data task files.
    tasks_dir: Path = Path("tasks")
    # Further folders of task files, searched with it (a Django project's apps); versions are
    # unique across all of them.
    more_tasks_dirs: tuple[Path, ...] = ()
    # The Celery queue that chunk jobs go to.
    queue: str = "data_tasks"
    # A chunk job stops starting new batches after this many seconds and enqueues its successor.
    chunk_seconds: float = 30.0
    # A running task whose heartbeat is older than this, and whose lock has lapsed, is reclaimed.
    stale_seconds: float = 120.0
    # A lane's lease in Redis expires this long after its last renewal; a thread renews it
    # while the chunk's process lives, however long a batch takes.
    lock_seconds: float = 60.0
    # PostgreSQL and MariaDB end a batch's transaction left idle this long (its runner frozen
    # or stopped mid-batch), which frees the lane for a reclaim. A batch's own work between
    # two statements (an API call, a long computation) must stay under it.
    batch_idle_seconds: float = 600.0
    # Failed attempts at one cursor before the task is marked failed.
    max_attempts: int = 5
    # Backoff before retry n is retry_base_seconds * 2 ** (n - 1), capped at retry_max_seconds.
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    # A worker that lacks a task file re-publishes the job this many times, this far apart.
    unknown_version_retries: int = 20
    unknown_version_countdown: float = 15.0
    # Connect timeouts of the deploy hook, so that it fails fast instead of hanging a deploy.
    connect_timeout_seconds: float = 3.0
    # Prefix of every Redis key the runner writes.
    key_prefix: str = "data_tasks"
    # How often celery beat runs the sweep job (the deploy hook's pass); 0 schedules none.
    sweep_seconds: float = 60.0
    # Celery's worker_soft_shutdown_timeout: on a cold shutdown (REMAP_SIGTERM=SIGQUIT on
    # Heroku) running chunks get this long to finish their batch; set it under the grace period.
    soft_shutdown_seconds: float = 0.0
    # The Celery app the deploy hook and the commands publish through ("proj.celery:app", or
    # "proj" as `celery -A` takes it); empty: the standalone app of `worker/` on REDIS_URL.
    celery_app: str = ""
    # PostgreSQL's synchronous_commit for batch transactions only (records' own changes keep
    # the server's). "off": a batch's COMMIT does not wait for its WAL to reach the disk; a
    # crash of the database server can undo the last fraction of a second of batches, and
    # with them their cursor moves, so they run again: still applied exactly once. "" keeps
    # the server's setting for batches too.
    batch_synchronous_commit: str = "off"

    def __post_init__(self) -> None:
        if self.batch_synchronous_commit not in SYNCHRONOUS_COMMIT:
            choices = ", ".join(value for value in SYNCHRONOUS_COMMIT if value)
            raise ValueError(
                "batch_synchronous_commit (DATA_TASKS_BATCH_SYNCHRONOUS_COMMIT) is "
                f"{self.batch_synchronous_commit!r}: use one of {choices}, or '' for the "
                "server's own"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from DATABASE_URL, REDIS_URL, DATA_TASKS_DIR and DATA_TASKS_* variables."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if "DATABASE_URL" in env:
            values["database_url"] = env["DATABASE_URL"]
        if "REDIS_URL" in env:
            values["redis_url"] = env["REDIS_URL"]
        if "DATA_TASKS_DIR" in env:
            values["tasks_dir"] = Path(env["DATA_TASKS_DIR"])
        for field in fields(cls):
            name = "DATA_TASKS_" + field.name.upper()
            if name in env and field.name not in ("tasks_dir", "more_tasks_dirs"):
                values[field.name] = _parse(name, env[name], field.type)
        return cls(**values)

    @property
    def tasks_dirs(self) -> tuple[Path, ...]:
        """Every folder of task files: tasks_dir first."""
        return (self.tasks_dir, *self.more_tasks_dirs)

    def require_database(self) -> Settings:
        """These settings, or MissingDatabase when no database was named."""
        if not self.database_url.strip():
            raise MissingDatabase()
        return self

    def with_(self, **changes: Any) -> Settings:
        """A copy with some values changed."""
        return replace(self, **changes)


def read_dotenv(directory: Path | None = None) -> bool:
    """Load ./.env as honcho and foreman do: variables already set win. True if one was read."""
    path = (directory or Path.cwd()) / ".env"
    if not path.is_file():
        return False
    load_dotenv(path, override=False)
    return True


def _parse(name: str, raw: str, type_name: Any) -> Any:
    """Convert one environment value to its field's type, or say which variable is wrong."""
    try:
        if type_name in ("float", float):
            return float(raw)
        if type_name in ("int", int):
            return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    return raw


# The password runs from the first : after the user to the last @ of the URL: people leave
# /, @, : and # in passwords unencoded. A URL without a password but with an @ after a colon
# (rare) is redacted too much, never too little.
_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S*)@", re.I)


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or log."""
    return _PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
