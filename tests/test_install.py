"""The built wheel in a fresh virtualenv, installed as a Heroku build or a Docker image does.

Every Procfile process is started from that venv, outside the source tree and with no test,
demo or lint package around, and runs a data task end to end against the real services.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from data_tasks.database import normalize_url
from deploy_hooks.embedded_redis import free_port
from tests.processes import REPO, wait_for
from tests.services import (
    REDIS_URL,
    create_postgres_database,
    drop_postgres_database,
    flushed_redis,
)
from tests.test_procfile import procfile

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# The extra sets a deploy installs; each gets one fresh venv per test session.
EXTRA_SETS = ("", "postgres", "flower")
# What the source tree holds besides the package; copying it would only slow the build.
NOT_SOURCE = (".venv", ".git", ".demo", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
ITEMS = 1_000
FLOWER_AUTH = "operator:s3cret"

TASKS = {
    "20260101000000_mark_release.py": '''"""Record that the release ran."""

from sqlalchemy import text

from data_tasks import one_shot


@one_shot()
def mark_release(session):
    session.execute(text("INSERT INTO marks (name) VALUES ('released')"))
''',
    "20260101000100_count_items.py": '''"""Count every item once."""

from sqlalchemy import text

from data_tasks import keyset_backfill


@keyset_backfill("items", key="id", batch_size=100)
def count_items(session, first_id, last_id):
    session.execute(
        text("UPDATE items SET hits = hits + 1 WHERE id BETWEEN :first AND :last"),
        {"first": first_id, "last": last_id},
    )
''',
}


def run(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end and fail the test with its output when it fails."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def build_wheel(root: Path) -> Path:
    """The wheel of the source as it is now, built from a copy so the tree stays clean."""
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root), str(source)])
    return next(root.glob("deferred_data_tasks-*.whl"))


def install(wheel: Path, venv: Path, extras: str) -> Path:
    """A fresh venv (no system site-packages) with the wheel and its declared dependencies."""
    started = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv)])
    requirement = f"{wheel}[{extras}]" if extras else str(wheel)
    # --no-compile: byte-compiling every dependency takes a third of the install's time.
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", requirement])
    print(f"venv [{extras}] installed in {time.monotonic() - started:.1f}s")
    return venv


class Installs:
    """The fresh venvs, all installed in parallel when the first one is asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pool = ThreadPoolExecutor(len(EXTRA_SETS))
        self.futures: dict[str, Future[Path]] = {}

    def venv(self, extras: str = "") -> Path:
        """The venv with these extras (a comma-separated list; empty for a plain install)."""
        if not self.futures:
            wheel = build_wheel(self.root)
            for each in EXTRA_SETS:
                venv = self.root / f"venv-{each or 'plain'}"
                self.futures[each] = self.pool.submit(install, wheel, venv, each)
        return self.futures[extras].result()


@pytest.fixture(scope="session")
def installs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installs]:
    """One set of fresh venvs for the whole session."""
    built = Installs(tmp_path_factory.mktemp("install"))
    yield built
    built.pool.shutdown(wait=True)


def app_env(venv: Path, database_url: str, **extra: str) -> dict[str, str]:
    """A platform's environment: the venv first on PATH, no PYTHONPATH into the source tree."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATA_TASKS_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        PYTHONUNBUFFERED="1",
        WORKER_CONCURRENCY="1",
        DATA_TASKS_SWEEP_SECONDS="1",
    )
    env.update(extra)
    return env


class Entry:
    """One Procfile entry started as a platform starts it: its command line, through a shell."""

    def __init__(self, name: str, app: Path, env: dict[str, str]) -> None:
        # The sweep's schedule file goes in the app's folder, not in a /tmp shared with others.
        command = procfile()[name].replace("/tmp/", f"{app}/")
        self.log_path = app / f"{name}.log"
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["sh", "-c", f"exec {command}"],
            cwd=app,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, text: str, timeout: float = 60.0) -> None:
        """Block until the text shows in its output; fail with the output if it exits first."""
        wait_for(lambda: text in self.log() or self.process.poll() is not None, timeout)
        assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.log()}"

    def stop(self) -> int:
        """SIGTERM, as a platform's restart sends; SIGKILL the group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log_file.close()
        return self.process.returncode


def prepare_app(app: Path, engine: Engine) -> None:
    """The app's folder with two task files, and the tables they change."""
    (app / "tasks").mkdir(parents=True)
    for name, source in TASKS.items():
        (app / "tasks" / name).write_text(source)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE marks (name VARCHAR(20))"))
        connection.execute(
            text("CREATE TABLE items (id INTEGER PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0)")
        )
        connection.execute(
            text("INSERT INTO items (id) VALUES (:id)"), [{"id": i} for i in range(1, ITEMS + 1)]
        )


def deploy_and_run(venv: Path, app: Path, database_url: str, engine: Engine) -> list[Entry]:
    """Start the worker, run the release, start the sweep; the data task must finish."""
    prepare_app(app, engine)
    flushed_redis(REDIS_URL)
    env = app_env(venv, database_url)
    assert shutil.which("celery", path=env["PATH"]) == str(venv / "bin" / "celery")
    worker = Entry("worker", app, env)
    entries = [worker]
    try:
        worker.wait_for_line("ready.")
        release = run(["sh", "-c", f"exec {procfile()['release']}"], cwd=app, env=env)
        assert "enqueued 20260101000000 mark_release" in release.stdout
        entries.append(Entry("sweep", app, env))
        run(["python", "-m", "deploy_hooks", "wait", "--timeout", "60"], cwd=app, env=env)
        # The sweep runs every second; the worker runs it, so beat sent it.
        wait_for(lambda: "Task data_tasks.sweep" in worker.log(), timeout=30)
    except BaseException:
        for entry in entries:
            entry.stop()
        raise
    with engine.connect() as connection:
        hits = connection.execute(text("SELECT hits, count(*) FROM items GROUP BY hits")).all()
        marks = connection.execute(text("SELECT count(*) FROM marks")).scalar_one()
    assert [tuple(row) for row in hits] == [(1, ITEMS)]
    assert marks == 1
    return entries


def stop_all(entries: list[Entry]) -> None:
    """Stop every entry; each must have run without a traceback."""
    for entry in reversed(entries):
        entry.stop()
    for entry in entries:
        assert "Traceback" not in entry.log(), entry.log()


def test_a_plain_install_runs_the_release_worker_and_sweep_on_sqlite(
    installs: Installs, tmp_path: Path
) -> None:
    venv = installs.venv()
    database_url = f"sqlite:///{tmp_path / 'app' / 'app.db'}"
    (tmp_path / "app").mkdir()
    engine = create_engine(database_url)
    try:
        entries = deploy_and_run(venv, tmp_path / "app", database_url, engine)
    finally:
        engine.dispose()
    stop_all(entries)
    assert entries[0].process.returncode == 0


def test_the_postgres_extra_runs_the_release_worker_and_sweep_on_postgresql(
    installs: Installs, tmp_path: Path
) -> None:
    database_url = create_postgres_database()
    engine = create_engine(normalize_url(database_url))
    try:
        entries = deploy_and_run(installs.venv("postgres"), tmp_path, database_url, engine)
        stop_all(entries)
    finally:
        engine.dispose()
        drop_postgres_database(database_url)


def test_the_flower_extra_serves_the_dashboard(installs: Installs, tmp_path: Path) -> None:
    venv = installs.venv("flower")
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(database_url)
    try:
        entries = deploy_and_run(venv, tmp_path, database_url, engine)
    finally:
        engine.dispose()
    port = free_port()
    env = app_env(venv, database_url, FLOWER_BASIC_AUTH=FLOWER_AUTH, PORT=str(port))
    entries.append(Entry("flower", tmp_path, env))
    try:
        page = wait_for(lambda: flower_page(port, entries[-1]), timeout=60, interval=0.3)
    finally:
        stop_all(entries)
    assert "Flower" in page


def flower_page(port: int, flower: Entry) -> str:
    """Flower's workers page, or "" while it is not listening yet."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/workers")
    request.add_header("Authorization", "Basic " + base64.b64encode(FLOWER_AUTH.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError):
        assert flower.process.poll() is None, flower.log()
        return ""


def test_a_plain_install_says_which_extra_a_postgres_url_needs(
    installs: Installs, tmp_path: Path
) -> None:
    env = app_env(installs.venv(), "postgresql://postgres@127.0.0.1:5432/test")
    (tmp_path / "tasks").mkdir()
    fix = "pip install 'deferred-data-tasks[postgres]'"
    for command in (procfile()["release"], "python -m deploy_hooks status", procfile()["worker"]):
        done = subprocess.run(
            ["sh", "-c", f"exec {command}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0, command
        assert fix in done.stderr.strip().splitlines()[-1], f"{command}:\n{done.stderr}"
        assert "Traceback" not in done.stderr, f"{command}:\n{done.stderr}"


def test_a_plain_install_imports_every_module_and_names_the_demo_extra(
    installs: Installs, tmp_path: Path
) -> None:
    python = str(installs.venv() / "bin" / "python")
    # Everything but the pytest plugin (it runs under pytest) and the `python -m` mains.
    imports = run(
        [python, "-c", IMPORT_EVERY_MODULE], cwd=tmp_path, env=app_env(Path(python).parent, "")
    )
    assert "data_tasks.jobs" in imports.stdout.split()
    demo = subprocess.run(
        [python, "-m", "deploy_hooks.demo", "--redis=fakeredis", f"--dir={tmp_path / 'demo'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 1
    assert "pip install 'deferred-data-tasks[demo]'" in demo.stdout + demo.stderr
    assert "Traceback" not in demo.stdout + demo.stderr


IMPORT_EVERY_MODULE = """
import importlib, pkgutil
for package in ("data_tasks", "deploy_hooks", "worker"):
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if module.name != "data_tasks.testing" and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
            print(module.name)
"""


def test_version_prints_the_installed_version(installs: Installs) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    bin_dir = installs.venv() / "bin"

    for command in (
        [str(bin_dir / "python"), "-m", "deploy_hooks"],
        [str(bin_dir / "deploy-hooks")],
    ):
        done = run([*command, "--version"])
        assert done.stdout.strip() == f"deferred-data-tasks {version}"
