"""A running chunk job's progress, read through a real Flower process's HTTP API."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from data_tasks.settings import Settings
from tests.conftest import copy_tasks
from tests.items import applied_counts, create_items
from tests.processes import REPO, WorkerProcess, environment, run_cli, run_hook, wait_for

pytestmark = pytest.mark.e2e

SLOW = "20250306000000"
AUTH = "operator:s3cret"


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Flower:
    """A real `celery -A worker flower` process with basic auth, and a client of its API."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.log_file = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "flower",
                f"--port={self.port}",
                "--address=127.0.0.1",
                f"--basic-auth={AUTH}",
            ],
            env=environment(settings),
            cwd=REPO,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def get(self, path: str, auth: str | None = AUTH) -> Any:
        """GET a path of the API and decode its JSON."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def answers(self) -> bool:
        """True once the API answers."""
        try:
            self.get("/api/workers")
        except (urllib.error.URLError, ConnectionError):
            assert self.process.poll() is None, self.log_path.read_text()
            return False
        return True

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log_file.close()


@pytest.fixture
def flower(pg_settings: Settings, tmp_path: Path) -> Iterator[Flower]:
    """Flower on the tests' broker, answering its API."""
    started = Flower(pg_settings, tmp_path / "flower.log")
    try:
        wait_for(started.answers, timeout=60, interval=0.2)
        yield started
    finally:
        started.stop()


def chunk_jobs(flower: Flower) -> dict[str, dict[str, Any]]:
    """Every chunk job Flower has seen, by task id."""
    tasks: dict[str, dict[str, Any]] = flower.get("/api/tasks?taskname=data_tasks.run_chunk")
    return tasks


def in_progress(flower: Flower) -> tuple[str, dict[str, Any]] | None:
    """A chunk job that Flower shows in the PROGRESS state with rows done, if any."""
    for task_id, task in chunk_jobs(flower).items():
        result = task.get("result")
        if task["state"] == "PROGRESS" and isinstance(result, dict) and result["processed"]:
            return task_id, task
    return None


def test_flower_shows_a_running_chunks_progress_and_its_summary(
    pg_settings: Settings,
    postgres_engine: Engine,
    flower: Flower,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = pg_settings.with_(chunk_seconds=4.0)
    copy_tasks(settings.tasks_dir, "20250306000000_ops_slow_items.py")
    create_items(postgres_engine, 12_000)
    workers.append(WorkerProcess(settings, tmp_path).wait_ready())
    assert run_hook(settings).returncode == 0

    found = wait_for(lambda: in_progress(flower), timeout=120, interval=0.2)
    assert found is not None
    task_id, listed = found
    info = flower.get(f"/api/task/info/{task_id}")

    assert info["name"] == "data_tasks.run_chunk"
    assert info["state"] == "PROGRESS"
    progress = info["result"]
    assert progress["version"] == SLOW and progress["total"] == 12_000
    assert 0 < progress["processed"] < 12_000
    assert progress["percent"] == round(100 * progress["processed"] / 12_000, 1)
    assert listed["result"]["version"] == SLOW
    status = run_cli(settings, "status")
    print(status.stdout)  # what an operator sees while it runs

    def finished() -> list[dict[str, Any]]:
        return [
            task
            for task in chunk_jobs(flower).values()
            if task["state"] == "SUCCESS" and "'outcome': 'succeeded'" in str(task["result"])
        ]

    done = wait_for(finished, timeout=180, interval=0.5)
    assert f"'version': '{SLOW}'" in done[0]["result"]
    assert applied_counts(postgres_engine) == {1: 12_000}
    with pytest.raises(urllib.error.HTTPError) as refused:
        flower.get("/api/tasks", auth=None)
    assert refused.value.code == 401
