"""Real processes the end-to-end tests start, stop and kill: celery workers and deploy hooks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from data_tasks.settings import Settings

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that points a subprocess at the test's services and task directory."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATA_TASKS_")}
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        DATA_TASKS_DIR=str(settings.tasks_dir),
        DATA_TASKS_CHUNK_SECONDS=str(settings.chunk_seconds),
        DATA_TASKS_STALE_SECONDS=str(settings.stale_seconds),
        DATA_TASKS_LOCK_SECONDS=str(settings.lock_seconds),
        DATA_TASKS_BATCH_IDLE_SECONDS=str(settings.batch_idle_seconds),
        DATA_TASKS_MAX_ATTEMPTS=str(settings.max_attempts),
        DATA_TASKS_RETRY_BASE_SECONDS=str(settings.retry_base_seconds),
        DATA_TASKS_RETRY_MAX_SECONDS=str(settings.retry_max_seconds),
        DATA_TASKS_UNKNOWN_VERSION_COUNTDOWN=str(settings.unknown_version_countdown),
        DATA_TASKS_UNKNOWN_VERSION_RETRIES=str(settings.unknown_version_retries),
        DATA_TASKS_KEY_PREFIX=settings.key_prefix,
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.1) -> T:
    """Poll until the predicate returns something truthy; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)
        value = predicate()
    return value


def run_hook(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m deploy_hooks.enqueue` as a deploy would, and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "deploy_hooks.enqueue", *args],
        env=environment(settings, **extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_cli(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m deploy_hooks <args>`."""
    return subprocess.run(
        [sys.executable, "-m", "deploy_hooks", *args],
        env=environment(settings, **extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


class WorkerProcess:
    """A real `celery -A worker worker` process (or `-A` a team's app) with its own log file."""

    counter = 0

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        concurrency: int = 1,
        pool: str = "prefork",
        extra_env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        app: str = "worker",
        cwd: Path = REPO,
    ) -> None:
        WorkerProcess.counter += 1
        self.name = f"test{WorkerProcess.counter}-{os.getpid()}@localhost"
        self.log_path = log_dir / f"worker{WorkerProcess.counter}.log"
        self.settings = settings
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            "-n",
            self.name,
            "--without-gossip",
            "--without-mingle",
            *extra_args,
        ]
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            env=environment(settings, **dict(extra_env or {})),
            cwd=cwd,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        """Block until the worker says it is ready to consume."""
        wait_for(lambda: "ready." in self.log() or self.process.poll() is not None, timeout)
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
        return self

    def signal(self, signum: int, whole_group: bool = False) -> None:
        """Send a signal to the main process (or to it and its pool children)."""
        if self.process.poll() is not None:
            return
        if whole_group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the worker and its children, as an OOM killer or a pulled plug would."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        """Warm shutdown (SIGTERM), as a deploy's restart sends; kill if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log_file.close()
        return self.process.returncode

    @property
    def alive(self) -> bool:
        """True while the main process runs."""
        return self.process.poll() is None
