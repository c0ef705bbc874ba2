"""Structured log lines (logfmt) that log tools parse: one per chunk and per state change."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("data_tasks")


def _value(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.3f}"
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def format_event(event: str, **fields: Any) -> str:
    """One logfmt line: event=... then the fields in the order given."""
    parts = [f"event={_value(event)}"]
    parts += [f"{key}={_value(value)}" for key, value in fields.items() if value is not None]
    return " ".join(parts)


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured line."""
    if logger.isEnabledFor(level):
        logger.log(level, format_event(event, **fields))


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none), fit for a log line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
