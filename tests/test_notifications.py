"""Callbacks told of a task's success, failure, pause or cancel, heard by a real web server."""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from data_tasks import operations
from data_tasks.history import NOTICE_ATTEMPTS, send_unsent
from data_tasks.notifications import Notice
from data_tasks.records import insert_missing, move
from data_tasks.runtime import Runtime
from data_tasks.settings import Settings
from data_tasks.status import Status
from tests.conftest import copy_tasks
from tests.items import create_items
from tests.processes import WorkerProcess, run_hook, wait_for
from tests.running import record

COUNT = "20250301000000"
COUNT_FILE = "20250301000000_ops_count_items.py"
POISONED = "20250301000100"
POISONED_FILE = "20250301000100_ops_poisoned_items.py"
NOTIFIED = "20250401000000"
NOTIFIED_TASK = '''"""Add one to items.applied; an item labelled 'poison' fails its batch."""

import json
import os
import urllib.request
from dataclasses import asdict

from sqlalchemy import text

from data_tasks import keyset_backfill


@keyset_backfill("items", key="id", batch_size=100, depends_on=[], max_attempts=1)
def notified_items(session, first_id, last_id):
    labels = session.execute(
        text("SELECT label FROM items WHERE id BETWEEN :f AND :l"), {"f": first_id, "l": last_id}
    ).scalars()
    if "poison" in labels:
        raise RuntimeError("a poisoned item")
    session.execute(
        text("UPDATE items SET applied = applied + 1 WHERE id BETWEEN :f AND :l"),
        {"f": first_id, "l": last_id},
    )


@notified_items.on_succeeded
@notified_items.on_failed
@notified_items.on_paused
@notified_items.on_cancelled
def tell(notice):
    body = json.dumps(asdict(notice), default=str).encode()
    request = urllib.request.Request(os.environ["CHAT_WEBHOOK_URL"] + "/task", data=body)
    urllib.request.urlopen(request, timeout=5).close()
'''


def post_to_chat(notice: Notice) -> None:
    """The README's example: post a task's outcome to a Slack-style incoming webhook."""
    text = f"data task {notice.version} {notice.name} {notice.status}"
    if notice.error:
        text += f": {notice.error}"
    request = urllib.request.Request(
        os.environ["CHAT_WEBHOOK_URL"],
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()


def explode(notice: Notice) -> None:
    """A callback whose webhook is down."""
    raise ConnectionError(f"chat is down\nwhile telling of {notice.version}")


class Webhook:
    """A real HTTP server in a thread that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[tuple[str, Any]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output to the test's own lines

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        """The `text` of every chat message received, in order."""
        return [body["text"] for path, body in self.received if path == "/"]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """A chat webhook on a free local port, named by CHAT_WEBHOOK_URL."""
    hook = Webhook()
    monkeypatch.setenv("CHAT_WEBHOOK_URL", hook.url)
    monkeypatch.delenv("DATA_TASKS_NOTIFY", raising=False)
    yield hook
    hook.close()


def poison(engine: Engine, item: int) -> None:
    """Label one item 'poison', so that the batch covering it raises."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE items SET label = 'poison' WHERE id = :i"), {"i": item})


@pytest.mark.e2e
def test_a_worker_posts_to_the_chat_when_a_task_succeeds_and_when_one_fails(
    pg_settings: Settings,
    postgres_engine: Engine,
    webhook: Webhook,
    workers: list[WorkerProcess],
    tmp_path: Path,
    runtime: Runtime,
) -> None:
    copy_tasks(pg_settings.tasks_dir, COUNT_FILE, POISONED_FILE)
    create_items(postgres_engine, 300)
    poison(postgres_engine, 250)
    notify = {"DATA_TASKS_NOTIFY": "tests.test_notifications:post_to_chat"}
    notify["CHAT_WEBHOOK_URL"] = webhook.url
    workers.append(WorkerProcess(pg_settings, tmp_path, extra_env=notify).wait_ready())

    hook = run_hook(pg_settings)
    assert hook.returncode == 0, hook.stderr

    wait_for(lambda: len(webhook.texts()) == 2, timeout=60)
    assert sorted(webhook.texts()) == [
        f"data task {COUNT} ops_count_items succeeded",
        f"data task {POISONED} ops_poisoned_items failed: RuntimeError: item 250 is poisoned",
    ]
    assert record(runtime, COUNT).state == Status.SUCCEEDED


def test_a_tasks_own_callbacks_hear_of_each_outcome_and_operator_command(
    runtime: Runtime, postgres_engine: Engine, webhook: Webhook
) -> None:
    (runtime.settings.tasks_dir / f"{NOTIFIED}_notified_items.py").write_text(NOTIFIED_TASK)
    create_items(postgres_engine, 300)

    assert operations.run_inline(runtime, NOTIFIED).status == Status.SUCCEEDED
    poison(postgres_engine, 250)
    operations.rerun(runtime, NOTIFIED, actor="alice")
    assert operations.run_inline(runtime, NOTIFIED).status == Status.FAILED
    operations.retry(runtime, NOTIFIED, actor="alice")
    operations.pause(runtime, NOTIFIED, actor="bob")
    operations.cancel(runtime, NOTIFIED, actor="bob")

    told = [body for path, body in webhook.received if path == "/task"]
    seen = [(n["status"], n["from_status"], n["epoch"], n["processed"], n["error"]) for n in told]
    assert seen == [
        ("succeeded", "running", 1, 300, None),
        ("failed", "running", 3, 200, "RuntimeError: a poisoned item"),
        ("paused", "enqueued", 4, 200, None),
        ("cancelled", "paused", 4, 200, None),
    ]
    assert {(n["version"], n["name"], n["total"]) for n in told} == {
        (NOTIFIED, "notified_items", 300)
    }
    assert all(n["at"].startswith("20") and n["at"].endswith("+00:00") for n in told)


def test_a_callback_that_raises_leaves_the_task_succeeded_and_logs_one_line(
    runtime: Runtime,
    postgres_engine: Engine,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 300)
    callbacks = "tests.test_notifications:explode, tests.test_notifications:post_to_chat"
    monkeypatch.setenv("DATA_TASKS_NOTIFY", callbacks)

    with caplog.at_level(logging.INFO, logger="data_tasks"):
        run = operations.run_inline(runtime, COUNT)

    assert run.status == Status.SUCCEEDED
    assert record(runtime, COUNT).state == Status.SUCCEEDED
    failures = [r.getMessage() for r in caplog.records if "notify_failed" in r.getMessage()]
    assert failures == [
        f"event=notify_failed version={COUNT} status=succeeded callback=explode "
        'error="ConnectionError: chat is down"'
    ]
    # The callback after the one that raised still ran.
    assert webhook.texts() == [f"data task {COUNT} ops_count_items succeeded"]


def test_a_setting_naming_nothing_callable_is_one_line_and_the_task_still_runs(
    runtime: Runtime,
    postgres_engine: Engine,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 10)
    monkeypatch.setenv("DATA_TASKS_NOTIFY", "no_such_module:tell,tests.test_notifications")

    with caplog.at_level(logging.INFO, logger="data_tasks"):
        assert operations.run_inline(runtime, COUNT).status == Status.SUCCEEDED

    invalid = [r.getMessage() for r in caplog.records if "notify_setting" in r.getMessage()]
    assert len(invalid) == 2 and all("\n" not in line for line in invalid)
    assert "callback=no_such_module:tell" in invalid[0]


def test_a_change_that_rolls_back_tells_no_one(
    db_runtime: Runtime, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_TASKS_NOTIFY", "tests.test_notifications:post_to_chat")
    with db_runtime.session() as session, session.begin():
        insert_missing(session, [(COUNT, "a_task")])

    with pytest.raises(RuntimeError), db_runtime.session() as session, session.begin():
        assert move(session, COUNT, Status.PENDING, Status.CANCELLED)
        raise RuntimeError("rolled back")
    assert webhook.received == []

    with db_runtime.session() as session, session.begin():
        assert move(session, COUNT, Status.PENDING, Status.CANCELLED)
    assert webhook.texts() == [f"data task {COUNT} a_task cancelled"]


KILLED_TELLING = '''"""Add one to items.applied; its callback's first try dies with its worker."""

import json
import os
import signal
import urllib.request
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import text

from data_tasks import keyset_backfill


@keyset_backfill("items", key="id", batch_size=100)
def killed_telling(session, first_id, last_id):
    session.execute(
        text("UPDATE items SET applied = applied + 1 WHERE id BETWEEN :f AND :l"),
        {"f": first_id, "l": last_id},
    )


@killed_telling.on_succeeded
def tell(notice):
    tried = Path(os.environ["TRIED_MARK"])
    if not tried.exists():
        tried.write_text(str(notice.id))
        os.kill(os.getpid(), signal.SIGKILL)
    body = json.dumps(asdict(notice), default=str).encode()
    request = urllib.request.Request(os.environ["CHAT_WEBHOOK_URL"] + "/task", data=body)
    urllib.request.urlopen(request, timeout=5).close()
'''


def sent_notices(engine: Engine) -> list[tuple[str, int, bool]]:
    """Every notified change: its status, how often it was sent, and whether it is settled."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT to_status, notice_attempts, notice_sent_at IS NOT NULL FROM task_history "
                "WHERE to_status IN ('succeeded', 'failed', 'paused', 'cancelled') ORDER BY id"
            )
        ).all()
    return [(status, attempts, bool(sent)) for status, attempts, sent in rows]


@pytest.mark.e2e
def test_a_worker_killed_before_its_callback_ran_still_tells_the_chat_through_the_sweep(
    pg_settings: Settings,
    postgres_engine: Engine,
    webhook: Webhook,
    workers: list[WorkerProcess],
    tmp_path: Path,
    runtime: Runtime,
) -> None:
    version = "20250501000000"
    (pg_settings.tasks_dir / f"{version}_killed_telling.py").write_text(KILLED_TELLING)
    create_items(postgres_engine, 500)
    tried = tmp_path / "tried"
    env = {
        "CHAT_WEBHOOK_URL": webhook.url,
        "TRIED_MARK": str(tried),
        "DATA_TASKS_SWEEP_SECONDS": "1",
    }
    beat = ["-B", "--schedule", str(tmp_path / "beat-schedule")]
    workers.append(WorkerProcess(pg_settings, tmp_path, extra_env=env, extra_args=beat))
    workers[-1].wait_ready()

    assert run_hook(pg_settings).returncode == 0

    # The change committed, then its process died inside the callback: nothing was told.
    wait_for(tried.exists, timeout=60)
    assert record(runtime, version).state == Status.SUCCEEDED
    assert webhook.received == []
    # The sweep sends it again once stale_seconds have passed, with the same notice id.
    wait_for(lambda: webhook.received, timeout=60)
    [(path, body)] = webhook.received
    assert (path, body["status"], body["processed"]) == ("/task", "succeeded", 500)
    assert body["id"] == int(tried.read_text())
    wait_for(lambda: sent_notices(postgres_engine) == [("succeeded", 1, True)], timeout=30)
    with postgres_engine.connect() as connection:
        applied = connection.execute(text("SELECT applied, count(*) FROM items GROUP BY 1"))
        assert [tuple(row) for row in applied] == [(1, 500)]
    # Sent once settled: later sweeps send nothing more.
    sweeps = workers[-1].log().count("Task data_tasks.sweep")
    wait_for(lambda: workers[-1].log().count("Task data_tasks.sweep") >= sweeps + 2, timeout=30)
    assert len(webhook.received) == 1


# A chat that is down for its first posts: how many more fail, and what it took.
flaky_chat: dict[str, Any] = {"failures": 0, "told": []}


def post_to_flaky_chat(notice: Notice) -> None:
    """Post the notice, or raise as a webhook that answers 503 does."""
    if flaky_chat["failures"] > 0:
        flaky_chat["failures"] -= 1
        raise ConnectionError("503 Service Unavailable")
    flaky_chat["told"].append(notice)


def test_a_callback_that_raises_is_sent_again_by_the_sweep_until_it_returns(
    db_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tasks(db_runtime.settings.tasks_dir, COUNT_FILE)
    create_items(db_runtime.engine, 30)
    monkeypatch.setenv("DATA_TASKS_NOTIFY", "tests.test_notifications:post_to_flaky_chat")
    monkeypatch.setitem(flaky_chat, "failures", 2)
    monkeypatch.setitem(flaky_chat, "told", [])
    engine, catalog = db_runtime.engine, db_runtime.catalog

    assert operations.run_inline(db_runtime, COUNT).status == Status.SUCCEEDED
    assert flaky_chat["told"] == []
    assert sent_notices(engine) == [("succeeded", 1, False)]
    # Too fresh for the sweep: its own process may still be telling.
    assert send_unsent(engine, catalog, older_than_seconds=3600) == 0
    assert send_unsent(engine, catalog, older_than_seconds=0) == 1
    assert sent_notices(engine) == [("succeeded", 2, False)]
    assert send_unsent(engine, catalog, older_than_seconds=0) == 1
    assert [n.status for n in flaky_chat["told"]] == ["succeeded"]
    assert sent_notices(engine) == [("succeeded", 3, True)]
    assert send_unsent(engine, catalog, older_than_seconds=0) == 0


def test_a_callback_that_never_returns_is_given_up_after_its_attempts_with_one_line(
    runtime: Runtime,
    postgres_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    copy_tasks(runtime.settings.tasks_dir, COUNT_FILE)
    create_items(postgres_engine, 10)
    monkeypatch.setenv("DATA_TASKS_NOTIFY", "tests.test_notifications:explode")
    assert operations.run_inline(runtime, COUNT).status == Status.SUCCEEDED
    with caplog.at_level(logging.INFO, logger="data_tasks"):
        while send_unsent(runtime.engine, runtime.catalog, older_than_seconds=0):
            pass
    assert sent_notices(postgres_engine) == [("succeeded", NOTICE_ATTEMPTS, True)]
    given_up = [r.getMessage() for r in caplog.records if "notice_given_up" in r.getMessage()]
    assert given_up == [f"event=notice_given_up version={COUNT} attempts={NOTICE_ATTEMPTS}"]
