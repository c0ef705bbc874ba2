"""The demo's celery workers: real `celery -A worker worker` processes, started and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent


class Worker:
    """One `celery -A worker worker` process, its output in a log file."""

    def __init__(self, number: int, env: dict[str, str], log_dir: Path) -> None:
        self.name = f"demo{number}@%h"
        self.log_path = log_dir / f"worker{number}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        command = [
            sys.executable,
            *("-m", "celery", "-A", "worker", "worker"),
            *("--loglevel=INFO", "--concurrency=1", "-n", self.name),
            # Nothing to synchronise with in a demo; mingle alone costs a second at start.
            *("--without-gossip", "--without-mingle"),
        ]
        # A session of its own: Ctrl-C reaches only the demo, which then stops workers in order.
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        """What the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    @property
    def ready(self) -> bool:
        """True once the worker consumes its queue."""
        return "ready." in self.log()

    @property
    def exited(self) -> bool:
        """True when the worker's main process has ended."""
        return self.process.poll() is not None

    def terminate(self) -> None:
        """Ask for a warm shutdown: the batch in flight finishes first."""
        if not self.exited:
            self.process.terminate()

    def wait(self, timeout: float) -> None:
        """Wait for the worker to end; kill it and its pool when it does not."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self._log.close()


def start_workers(
    count: int, env: dict[str, str], log_dir: Path, timeout: float = 60.0
) -> list[Worker]:
    """Start the workers and wait until each is ready (a failed start raises)."""
    workers: list[Worker] = []
    try:
        for number in range(1, count + 1):
            workers.append(Worker(number, env, log_dir))
        deadline = time.monotonic() + timeout
        while not all(worker.ready for worker in workers):
            for worker in workers:
                if worker.exited:
                    raise RuntimeError(f"a worker exited at start; see {worker.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready within {timeout:.0f}s; see {log_dir}")
            time.sleep(0.1)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Sequence[Worker], timeout: float = 30.0) -> None:
    """Warm-shut all workers down at once, then wait for each."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(timeout)
