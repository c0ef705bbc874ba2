"""Structured logs: one logfmt line per chunk and per status change, as log tools parse them."""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import Engine

from data_tasks import operations
from data_tasks.log import format_event
from data_tasks.runtime import Runtime
from tests.conftest import copy_tasks
from tests.items import create_items

COUNT = "20250301000000"
PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict[str, str]:
    """A logfmt line as a log tool reads it: key=value pairs, quoted values unescaped."""
    fields: dict[str, str] = {}
    for key, value in PAIR.findall(line):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value[1:-1])
        fields[key] = value
    assert " ".join(f"{k}={v}" for k, v in PAIR.findall(line)) == line, line
    return fields


def test_logfmt_quotes_what_needs_quoting() -> None:
    line = format_event("failed", version="20250301000000", error='bad "value"\nthen', rows=3)
    assert parse_logfmt(line) == {
        "event": "failed",
        "version": "20250301000000",
        "error": 'bad "value"\nthen',
        "rows": "3",
    }


def test_every_chunk_and_every_status_change_logs_one_parsable_line(
    runtime: Runtime, postgres_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250301000000_ops_count_items.py")
    create_items(postgres_engine, 500)

    with caplog.at_level(logging.INFO, logger="data_tasks"):
        run = operations.run_inline(runtime, COUNT, batches_per_chunk=2)

    lines = [parse_logfmt(r.getMessage()) for r in caplog.records if r.name == "data_tasks"]
    changes = [line for line in lines if line["event"] == "status"]
    chunks = [line for line in lines if line["event"] == "chunk"]

    # The task: claimed, running while its lane's chunks hand over to each other, succeeded.
    assert [(c["from"], c["to"]) for c in changes] == [
        ("pending", "enqueued"),
        ("enqueued", "running"),
        ("running", "succeeded"),
    ]
    assert all(c["version"] == COUNT and c["epoch"] == "1" for c in changes)
    # Every chunk starts the lane at the next epoch (the fence); handing over keeps it.
    assert [line["epoch"] for line in chunks] == ["1", "2", "3"]
    assert changes[-1]["rows"] == "500"

    assert len(chunks) == len(run.chunks) == 3
    for line, summary in zip(chunks, run.chunks, strict=True):
        assert line["version"] == COUNT
        assert line["epoch"] == str(summary["epoch"])
        assert line["outcome"] == summary["outcome"]
        assert (line["batches"], line["rows"]) == (
            str(summary["batches"]),
            str(summary["rows"]),
        )
        assert float(line["duration"]) >= 0
    assert [line["batches"] for line in chunks] == ["2", "2", "1"]
    assert [line["rows"] for line in chunks] == ["200", "200", "100"]
    assert [line["outcome"] for line in chunks] == ["continued", "continued", "succeeded"]


def test_operator_changes_log_the_status_line_too(
    runtime: Runtime, postgres_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    copy_tasks(runtime.settings.tasks_dir, "20250301000000_ops_count_items.py")
    create_items(postgres_engine, 10)

    with caplog.at_level(logging.INFO, logger="data_tasks"):
        operations.cancel(runtime, COUNT)
        operations.rerun(runtime, COUNT)
        operations.pause(runtime, COUNT)

    changes = [
        parse_logfmt(r.getMessage())
        for r in caplog.records
        if r.getMessage().startswith("event=status ")
    ]
    assert [(c["from"], c["to"]) for c in changes] == [
        ("pending", "cancelled"),
        ("cancelled", "enqueued"),
        ("enqueued", "paused"),
    ]
    assert [c["epoch"] for c in changes] == ["0", "1", "1"]
