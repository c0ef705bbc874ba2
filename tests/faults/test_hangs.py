"""A Redis that accepts connections but never answers, and a pass that holds the hook lock.

The README promises that the deploy hook never blocks a deploy: it returns within 10 s
whatever Redis does, with one line on stderr.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from data_tasks.publisher import ChunkMessage
from data_tasks.settings import Settings
from deploy_hooks.exit_codes import OK, REDIS_UNREACHABLE
from deploy_hooks.publishing import LazyCeleryPublisher
from tests.conftest import copy_tasks
from tests.faults.harness import (
    PrivateRedis,
    private_redis,
    queued_messages,
    record,
    within_bound,
)
from tests.processes import REPO, environment, run_cli, run_hook

pytestmark = pytest.mark.e2e

TASK_FILE = "20250101000000_count_items.py"
VERSION = "20250101000000"


@pytest.fixture
def frozen(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server, stopped with SIGSTOP: the kernel still accepts connections."""
    with private_redis(tmp_path) as server:
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            yield server
        finally:
            server.process.send_signal(signal.SIGCONT)


def one_error_line(stderr: str) -> str:
    """The single line a failing command printed on stderr."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def test_hook_against_a_frozen_redis_exits_4_within_its_bound(
    pg_settings: Settings, frozen: PrivateRedis
) -> None:
    settings = pg_settings.with_(redis_url=frozen.url)
    copy_tasks(settings.tasks_dir, TASK_FILE)
    bound = within_bound()
    started = time.monotonic()
    result = run_hook(settings)
    took = time.monotonic() - started
    assert result.returncode == REDIS_UNREACHABLE, result.stderr
    assert took < bound, f"the hook took {took:.1f}s (bound {bound:.1f}s)"
    assert "Redis unreachable" in one_error_line(result.stderr)


def test_commands_while_redis_is_frozen_return_within_their_bound(
    pg_settings: Settings, postgres_engine: Engine, tmp_path: Path
) -> None:
    with private_redis(tmp_path) as server:
        settings = pg_settings.with_(redis_url=server.url)
        copy_tasks(settings.tasks_dir, TASK_FILE)
        assert run_hook(settings).returncode == OK
        assert run_cli(settings, "pause", VERSION).returncode == OK
        assert server.process is not None
        bound = within_bound("deploy_hooks")
        server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            status = run_cli(settings, "status")
            status_took = time.monotonic() - started
            started = time.monotonic()
            resume = run_cli(settings, "resume", VERSION)
            resume_took = time.monotonic() - started
        finally:
            server.process.send_signal(signal.SIGCONT)
    # `status` reads the records only: it answers while Redis is frozen.
    assert status.returncode == OK, status.stderr
    assert VERSION in status.stdout
    assert status_took < bound, f"status took {status_took:.1f}s"
    # `resume` must publish: it fails with one line instead of hanging.
    assert resume.returncode == REDIS_UNREACHABLE, resume.stderr
    assert resume_took < bound, f"resume took {resume_took:.1f}s"
    one_error_line(resume.stderr)
    assert record(postgres_engine, VERSION)["status"] == "paused"


def test_publishing_to_a_frozen_redis_fails_within_its_bound(
    pg_settings: Settings, frozen: PrivateRedis
) -> None:
    # The publish path of the hook and the commands: Celery and kombu, not redis-py's client.
    publisher = LazyCeleryPublisher(pg_settings.with_(redis_url=frozen.url))
    started = time.monotonic()
    with pytest.raises(Exception, match="Timeout"):
        publisher.publish(ChunkMessage(VERSION, 1))
    # Two tries of a 3 s socket timeout at most, in this process: no start-up to allow for.
    assert time.monotonic() - started < 7.0


def test_hooks_that_find_the_hook_lock_held_leave_the_work_to_its_holder(
    pg_settings: Settings, postgres_engine: Engine, redis_client: redis.Redis
) -> None:
    settings = pg_settings
    copy_tasks(settings.tasks_dir, TASK_FILE)
    # A sweep stuck in the middle of its pass holds the lock (here: the test does).
    redis_client.set(f"{settings.key_prefix}:hook", "held-by-a-sweep", px=60_000)
    bound = within_bound(processes=2)
    hooks = [
        subprocess.Popen(
            [sys.executable, "-m", "deploy_hooks.enqueue"],
            env=environment(settings),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    started = time.monotonic()
    outputs = [hook.communicate(timeout=60) for hook in hooks]
    took = time.monotonic() - started
    assert [hook.returncode for hook in hooks] == [OK, OK], outputs
    assert took < bound, f"the hooks took {took:.1f}s (bound {bound:.1f}s)"
    for out, err in outputs:
        assert err == ""
        assert out.strip().splitlines() == [
            "another pass is running; it will enqueue what may run "
            "(and the next sweep or deploy hook what it leaves)"
        ]
    # Nothing was claimed twice, or at all: the holder's pass owns the work.
    assert queued_messages(redis_client) == []
    assert record(postgres_engine, VERSION).get("status") in (None, "pending")

    redis_client.delete(f"{settings.key_prefix}:hook")
    after = run_hook(settings)
    assert after.returncode == OK, after.stderr
    assert [m["version"] for m in queued_messages(redis_client)] == [VERSION]


SLOW_IMPORT = '''"""Count the items, after an import that takes a while."""

import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from data_tasks import one_shot

Path({importing!r}).touch()
time.sleep(1.0)


@one_shot()
def slow_import(session: Session) -> None:
    session.execute(text("SELECT 1"))
'''


def test_hook_whose_redis_freezes_after_it_took_the_lock_exits_4_within_its_bound(
    pg_settings: Settings, postgres_engine: Engine, tmp_path: Path
) -> None:
    with private_redis(tmp_path) as server:
        settings = pg_settings.with_(redis_url=server.url)
        # The hook imports task files under its lock: this one gives the test time to freeze.
        # (A deploy first checks under the same lock whether there is anything new, without
        # importing any file: the freeze must land on the full pass, which does.)
        importing = tmp_path / "importing"
        source = SLOW_IMPORT.replace("{importing!r}", repr(str(importing)))
        (settings.tasks_dir / "20250101000000_slow_import.py").write_text(source)
        # The task file's 1 s import is the hook's own start-up, not a fault.
        bound = within_bound() + 1.0
        hook = subprocess.Popen(
            [sys.executable, "-m", "deploy_hooks.enqueue"],
            env=environment(settings),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        client = redis.Redis.from_url(server.url)
        lock = f"{settings.key_prefix}:hook"
        deadline = started + 30
        while not (importing.exists() and client.exists(lock)) and time.monotonic() < deadline:
            time.sleep(0.02)
        client.close()
        assert importing.exists(), "the hook never imported the task file"
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            _out, err = hook.communicate(timeout=60)
        finally:
            server.process.send_signal(signal.SIGCONT)
        took = time.monotonic() - started
    assert hook.returncode == REDIS_UNREACHABLE, err
    assert took < bound, f"the hook took {took:.1f}s (bound {bound:.1f}s)"
    one_error_line(err)
    # Nothing was claimed: the queued markers are written first, and they failed.
    assert record(postgres_engine, VERSION).get("status") == "pending"
