"""require_succeeded inside a real `alembic upgrade head` on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, inspect, text

from data_tasks import operations
from data_tasks.publisher import RecordingPublisher
from data_tasks.runtime import Runtime
from data_tasks.scheduler import enqueue
from data_tasks.settings import Settings
from tests.conftest import copy_tasks
from tests.items import create_items
from tests.processes import REPO, environment

COUNT = "20250101000000"
FAILS = "20250106000000"

ENV_PY = """
import os

from alembic import context
from sqlalchemy import create_engine

from data_tasks.database import normalize_url

engine = create_engine(normalize_url(os.environ["DATABASE_URL"]))
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""
FIRST = """
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None


def upgrade():
    op.create_table("gate_prices", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("gate_prices")
"""
SECOND = """
import os

from alembic import op
import sqlalchemy as sa

from data_tasks.migrations import require_succeeded

revision = "0002"
down_revision = "0001"


def upgrade():
    require_succeeded(os.environ["GATE_VERSION"])
    op.add_column("gate_prices", sa.Column("cents", sa.Integer))


def downgrade():
    op.drop_column("gate_prices", "cents")
"""


def alembic_project(folder: Path) -> Path:
    """A team's alembic folder: two revisions, the second gated on a data task."""
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (folder / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (folder / "migrations" / "env.py").write_text(ENV_PY)
    (versions / "0001_prices.py").write_text(FIRST)
    (versions / "0002_price_cents.py").write_text(SECOND)
    return folder / "alembic.ini"


def alembic(
    ini: Path, settings: Settings, gate: str, *command: str
) -> subprocess.CompletedProcess[str]:
    """Run the alembic command line, as a deploy runs its migrations."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), *command],
        env=environment(settings, GATE_VERSION=gate),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed upgrade."""
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stderr.strip().splitlines()[-1]


def head(engine: Engine) -> str | None:
    """The revision the database is at."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_the_upgrade_waits_for_the_data_task_it_names(
    pg_settings: Settings, postgres_engine: Engine, tmp_path: Path
) -> None:
    ini = alembic_project(tmp_path / "app")
    copy_tasks(
        pg_settings.tasks_dir, "20250101000000_count_items.py", "20250106000000_always_fails.py"
    )
    create_items(postgres_engine, 1_000)
    runtime = Runtime.build(pg_settings.with_(max_attempts=1), RecordingPublisher())
    runtime.create_tables()
    try:
        line = refused(alembic(ini, pg_settings, COUNT, "upgrade", "head"))
        assert f"data task {COUNT} is not recorded yet: deploy and let it run first" in line
        assert line.startswith("data_tasks.errors.DataTaskNotDone: ")
        # One transaction on PostgreSQL: the revision before the gate is rolled back too.
        assert head(postgres_engine) is None

        enqueue(runtime)  # what the deploy hook does: both tasks are claimed and enqueued
        line = refused(alembic(ini, pg_settings, COUNT, "upgrade", "head"))
        assert f"data task {COUNT} count_items is enqueued: this migration needs it" in line

        operations.run_inline(runtime, COUNT)
        result = alembic(ini, pg_settings, COUNT, "upgrade", "head")
        assert result.returncode == 0, result.stderr
        assert head(postgres_engine) == "0002"

        assert alembic(ini, pg_settings, COUNT, "downgrade", "0001").returncode == 0
        operations.run_inline(runtime, FAILS)
        line = refused(alembic(ini, pg_settings, FAILS, "upgrade", "head"))
        assert f"data task {FAILS} always_fails is failed" in line
        operations.skip(runtime, [FAILS])
        result = alembic(ini, pg_settings, FAILS, "upgrade", "head")
        assert result.returncode == 0, result.stderr
        assert head(postgres_engine) == "0002"
    finally:
        runtime.close()
