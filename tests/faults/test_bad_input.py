"""Bad task files and bad chunk messages: one clear error each, and nothing else affected."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from data_tasks.publisher import JOB_NAME
from data_tasks.settings import Settings
from tests.faults.harness import (
    SLOW,
    backfill,
    exactly_once,
    fault_settings,
    hook_ok,
    log_lines,
    queued_messages,
    record,
    untouched,
    wait_progress,
    wait_status,
)
from tests.faults.ledger import FaultCase
from tests.processes import WorkerProcess, run_hook, wait_for
from worker.app import make_app

pytestmark = pytest.mark.e2e

GOOD = "20250903000000_faulty_good.py"
BAD_FILES: dict[str, tuple[dict[str, str], str]] = {
    "syntax error": (
        {"20250903000001_faulty_syntax.py": "def broken(:\n"},
        "20250903000001_faulty_syntax.py: syntax error at line 1",
    ),
    "raises at import": (
        {"20250903000002_faulty_import.py": "raise RuntimeError('no config')\n"},
        "20250903000002_faulty_import.py: raised RuntimeError at import (line 1): no config",
    ),
    "no data task": (
        {"20250903000003_faulty_empty.py": "ANSWER = 42\n"},
        "20250903000003_faulty_empty.py: declares no data task",
    ),
    "same version twice": (
        {
            "20250903000004_faulty_one.py": "from tests.fixtures.tasks import *\n",
            "20250903000004_faulty_two.py": "from tests.fixtures.tasks import *\n",
        },
        "20250903000004_faulty_two.py: version 20250903000004 is also used by "
        "20250903000004_faulty_one.py",
    ),
    "name not matching the pattern": (
        {"2025_faulty_bad_name.py": "ANSWER = 42\n"},
        "2025_faulty_bad_name.py: name must be <14-digit UTC timestamp>_<snake_case_name>.py",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_task_file_stops_the_hook_with_one_line_naming_it(
    case: str,
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    faults: FaultCase,
) -> None:
    faults.describe(
        "Bad task files: a syntax error, a raise at import, no data task, the same version "
        "twice, a name that does not match the pattern (each refused with one line naming the "
        "file; no row touched)",
        expected=0,
    )
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    files, expected = BAD_FILES[case]
    faults.inject(case, SLOW)
    for name, source in files.items():
        (settings.tasks_dir / name).write_text(source)

    result = run_hook(settings)
    assert result.returncode == 2, result
    [line] = result.stderr.splitlines()
    assert line.startswith("error: invalid task file ") and expected in line, line
    # Nothing was claimed or published, no data changed.
    assert record(postgres_engine, SLOW).get("status") in (None, "pending")
    assert queued_messages(redis_client) == []
    untouched(postgres_engine)


class Pickled:
    """A payload that creates a file if anything ever unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (str(self.path),))


def raw_message(redis_client: redis.Redis, settings: Settings, body: bytes) -> str:
    """Push a message whose envelope is right and whose body is `body`; returns its id."""
    capture = make_app(settings)
    capture.send_task(JOB_NAME, kwargs={}, queue="faulty_capture")
    popped = redis_client.rpop("faulty_capture")
    assert isinstance(popped, bytes)
    envelope = json.loads(popped)
    task_id = str(uuid.uuid4())
    envelope["headers"]["id"] = task_id
    envelope["properties"]["correlation_id"] = task_id
    envelope["properties"]["delivery_tag"] = str(uuid.uuid4())
    envelope["properties"]["delivery_info"]["routing_key"] = settings.queue
    envelope["body"] = base64.b64encode(body).decode()
    redis_client.lpush(settings.queue, json.dumps(envelope))
    return task_id


def test_bad_chunk_messages_are_refused_one_by_one_while_a_backfill_runs(
    pg_settings: Settings,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
    faults: FaultCase,
) -> None:
    faults.describe(
        "Bad chunk messages during a backfill: missing field, wrongly typed fields (2), "
        "`../../etc/passwd` as the version, an unexpected field, a body that is not JSON, a "
        "queue entry that is not JSON, a pickle message"
    )
    settings = fault_settings(pg_settings)
    backfill(settings, postgres_engine)
    worker = WorkerProcess(settings, tmp_path)
    workers.append(worker)
    worker.wait_ready()
    hook_ok(settings)
    # The bad messages arrive while the backfill runs, between its chunks.
    wait_progress(postgres_engine, SLOW, 0)
    epoch = record(postgres_engine, SLOW)["epoch"]

    app = make_app(settings)
    refusals: dict[str, str] = {}

    def send(kwargs: dict[str, object], reason: str) -> None:
        faults.inject(reason, SLOW)
        result = app.send_task(JOB_NAME, kwargs=kwargs, queue=settings.queue)
        refusals[result.id] = reason

    send({"version": SLOW}, "epoch None is not a non-negative integer")
    send({"version": SLOW, "epoch": str(epoch)}, f"epoch '{epoch}' is not a non-negative integer")
    send({"version": int(SLOW), "epoch": epoch}, f"version {SLOW} is not a 14-digit version")
    send({"version": "../../etc/passwd", "epoch": epoch}, "'../../etc/passwd' is not a 14-digit")
    send({"version": SLOW, "epoch": epoch, "path": "/etc"}, "unexpected fields ['path']")
    faults.inject("a body that is not JSON", SLOW)
    not_json = raw_message(redis_client, settings, b"{not json")
    marker = tmp_path / "unpickled"
    faults.inject("a pickle message", SLOW)
    app.send_task(JOB_NAME, args=[Pickled(marker)], queue=settings.queue, serializer="pickle")
    faults.inject("a queue entry that is not JSON", SLOW)
    redis_client.lpush(settings.queue, b"\x00 not even an envelope")

    wait_status(postgres_engine, SLOW, "succeeded", timeout=120)
    log = worker.log()
    for task_id, reason in refusals.items():
        [line] = log_lines(log, f"refused chunk message {task_id}")
        assert reason in line, line
    wait_for(lambda: log_lines(worker.log(), "Can't decode message body", not_json))
    wait_for(
        lambda: log_lines(
            worker.log(),
            "invalid task message: Refusing to deserialize untrusted content of type pickle",
        )
    )
    wait_for(lambda: log_lines(worker.log(), "dropped a queue entry that is not a JSON message"))
    assert not marker.exists()
    assert worker.alive
    exactly_once(postgres_engine)
