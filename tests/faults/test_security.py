"""Security defaults: JSON only, Flower behind basic auth, no password in any output."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from data_tasks.settings import Settings
from tests.faults.harness import (
    SLOW,
    backfill,
    exactly_once,
    fault_settings,
    free_port,
    hook_ok,
    private_redis,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.processes import REPO, WorkerProcess, environment, run_cli, run_hook, wait_for
from worker.app import make_app

pytestmark = pytest.mark.e2e

REDIS_PASSWORD = "faulty-redis-pw-7c1"
DB_PASSWORD = "faulty-db-pw-9e4"


def test_the_app_speaks_json_only(pg_settings: Settings) -> None:
    conf = make_app(pg_settings).conf
    assert list(conf.accept_content) == ["json"]
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == ("json",) * 3


def flower_status(port: int, auth: str | None) -> int:
    """The HTTP status of Flower's workers page, with or without basic auth."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@contextmanager
def flower(settings: Settings, tmp_path: Path, **env: str) -> Iterator[int]:
    """`python -m deploy_hooks.flower` (the Procfile's command) on a free port."""
    port = free_port()
    log = (tmp_path / f"flower{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy_hooks.flower"],
        env=environment(settings, PORT=str(port), **env),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: flower_status(port, None) or process.poll() is not None, timeout=60)
        assert process.poll() is None, (tmp_path / f"flower{port}.log").read_text()
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


def test_flower_refuses_to_start_without_basic_auth(pg_settings: Settings) -> None:
    for env in ({}, {"FLOWER_BASIC_AUTH": "operator"}, {"FLOWER_UNAUTHENTICATED": "yes"}):
        result = subprocess.run(
            [sys.executable, "-m", "deploy_hooks.flower"],
            env=environment(pg_settings, **env),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 64, result
        [line] = result.stderr.splitlines()
        assert line.startswith("error: FLOWER_BASIC_AUTH"), line
    assert "python -m deploy_hooks.flower" in (REPO / "Procfile").read_text()


def test_flower_asks_for_the_password_and_opens_only_when_told(
    pg_settings: Settings, tmp_path: Path
) -> None:
    with flower(pg_settings, tmp_path, FLOWER_BASIC_AUTH="operator:s3cret") as port:
        assert flower_status(port, None) == 401
        assert flower_status(port, "operator:wrong") == 401
        assert flower_status(port, "operator:s3cret") == 200
    with flower(pg_settings, tmp_path, FLOWER_UNAUTHENTICATED="true") as port:
        assert flower_status(port, None) == 200


def test_passwords_in_urls_never_reach_logs_or_status(
    pg_settings: Settings,
    postgres_engine: Engine,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "Passwords in `DATABASE_URL` and `REDIS_URL` (a Redis with `requirepass`), plus a wrong "
        "password and an unreachable database"
    )
    with private_redis(tmp_path, password=REDIS_PASSWORD) as server:
        # Trust authentication ignores the password, so the URL works and still carries it.
        database_url = make_url(pg_settings.database_url).set(password=DB_PASSWORD)
        settings = fault_settings(pg_settings).with_(
            redis_url=server.url,
            database_url=database_url.render_as_string(hide_password=False),
        )
        backfill(settings, postgres_engine)
        outputs = [hook_ok(settings)]
        worker = WorkerProcess(settings, tmp_path)
        workers.append(worker)
        worker.wait_ready()
        wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
        for args in (("status",), ("status", "--json")):
            result = run_cli(settings, *args)
            assert result.returncode == 0, result.stderr
            outputs += [result.stdout, result.stderr]
        wrong_redis = settings.with_(redis_url=server.url.replace(REDIS_PASSWORD, "wrong-pw-1b2"))
        no_database = settings.with_(
            database_url=database_url.set(port=free_port()).render_as_string(hide_password=False)
        )
        for broken, code in ((wrong_redis, 4), (no_database, 3)):
            faults.inject("a hook with a wrong password or no database", SLOW)
            result = run_hook(broken)
            assert result.returncode == code, result
            assert len(result.stderr.splitlines()) == 1, result.stderr
            outputs += [result.stdout, result.stderr]
        faults.inject("status with no database", SLOW)
        result = run_cli(no_database, "status")
        assert result.returncode != 0
        outputs += [result.stdout, result.stderr]
        assert worker.stop() == 0
        outputs.append(worker.log())
    text = "\n".join(outputs)
    assert "***" in text  # the URLs do show, redacted
    for secret in (REDIS_PASSWORD, DB_PASSWORD, "wrong-pw-1b2"):
        assert secret not in text
    exactly_once(postgres_engine)
