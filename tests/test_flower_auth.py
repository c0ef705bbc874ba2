"""Flower as the Procfile runs it: /metrics and /healthcheck ask for its password too."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_tasks.settings import Settings
from tests.faults.harness import free_port
from tests.processes import REPO, environment, wait_for

pytestmark = pytest.mark.e2e

AUTH = "operator:s3cret"


def status_of(port: int, path: str, auth: str | None = None) -> int:
    """The HTTP status of a GET."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture
def flower_port(pg_settings: Settings, tmp_path: Path) -> Iterator[int]:
    """`python -m deploy_hooks.flower` with FLOWER_BASIC_AUTH, answering on a free port."""
    port = free_port()
    log_path = tmp_path / "flower.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "deploy_hooks.flower", f"--port={port}", "--address=127.0.0.1"],
            env=environment(pg_settings, FLOWER_BASIC_AUTH=AUTH),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answers() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return status_of(port, "/api/workers", AUTH) == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        try:
            wait_for(answers, timeout=60, interval=0.2)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_metrics_and_healthcheck_need_the_password(flower_port: int) -> None:
    assert status_of(flower_port, "/metrics") == 401
    assert status_of(flower_port, "/healthcheck") == 401
    assert status_of(flower_port, "/metrics", "operator:wrong") == 401
    assert status_of(flower_port, "/metrics", AUTH) == 200
    assert status_of(flower_port, "/healthcheck", AUTH) == 200
    assert status_of(flower_port, "/api/workers") == 401
