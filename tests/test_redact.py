"""A password in a URL never shows, whatever characters it holds unencoded."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_tasks.settings import Settings, redact
from deploy_hooks.exit_codes import USAGE
from tests.processes import run_cli

# Any printable character but whitespace (which ends a URL in a log line).
PASSWORDS = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
)
SPECIAL = st.text(st.sampled_from("/@:#?%!a1"), min_size=1, max_size=20)


@given(password=PASSWORDS | SPECIAL, user=st.sampled_from(["", "app", "default"]))
def test_redact_hides_any_password(password: str, user: str) -> None:
    for scheme, rest in (("redis", "cache:6379/0"), ("postgresql+psycopg", "db:5432/app")):
        url = f"{scheme}://{user}:{password}@{rest}"
        assert redact(url) == f"{scheme}://{user}:***@{rest}"
        line = f"error: Redis unreachable at {url}: refused"
        assert redact(line) == f"error: Redis unreachable at {scheme}://{user}:***@{rest}: refused"


@pytest.mark.parametrize("password", ["p/ss@w:rd#1", "@@//::##"])
def test_status_never_prints_a_password(password: str, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for database_url in (
        f"postgresql://postgres:{password}@127.0.0.1:5432/test",
        f"sqlite:///{tmp_path / 'records.db'}",
    ):
        result = run_cli_with(tasks, database_url, f"redis://:{password}@127.0.0.1:6379/14")
        printed = result.stdout + result.stderr
        assert password not in printed, printed
        if result.returncode != 0:
            assert len(result.stderr.strip().splitlines()) == 1, printed
        if database_url.startswith("postgresql") and result.returncode == USAGE:
            assert "percent-encode" in result.stderr


def run_cli_with(
    tasks: Path, database_url: str, redis_url: str
) -> subprocess.CompletedProcess[str]:
    """`status` with these URLs."""
    settings = Settings(database_url=database_url, redis_url=redis_url, tasks_dir=tasks)
    return run_cli(settings, "status")
