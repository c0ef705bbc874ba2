"""Cursors as canonical JSON text: what a lane stores, and what its compare-and-set compares.

Ints, strings, floats, booleans, lists and dicts are plain JSON, so cursors written by earlier
versions still read. Keys that JSON has no type for are tagged: {"t": "uuid", "v": "..."}.
Equal cursors give equal text (the compare-and-set compares text), and decoding then encoding
gives the same text back, so a cursor round-trips exactly through the record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

# Tag -> how to read the tagged text back.
_DECODERS: dict[str, Callable[[str], Any]] = {
    "uuid": uuid.UUID,
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
}


class UnsupportedCursor(TypeError):
    """A key or cursor value of a type the record cannot store."""


def _tagged(value: Any) -> Any:
    """The JSON-native form of a cursor value, tagging the types JSON lacks."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_tagged(item) for item in value]
    if isinstance(value, dict):
        return {str(name): _tagged(item) for name, item in value.items()}
    if isinstance(value, uuid.UUID):
        return {"t": "uuid", "v": str(value)}
    if isinstance(value, datetime):
        # One text per instant: aware times are stored in UTC, naive ones as they are.
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return {"t": "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {"t": "date", "v": value.isoformat()}
    if isinstance(value, time):
        return {"t": "time", "v": value.isoformat()}
    if isinstance(value, Decimal):
        # normalize(): 1.5 and 1.50 are one key, so they must be one text.
        return {"t": "decimal", "v": str(value.normalize())}
    raise UnsupportedCursor(
        f"a key of type {type(value).__name__} cannot be stored as a cursor "
        "(supported: int, str, float, bool, uuid, datetime, date, time, Decimal, tuples of them)"
    )


def _untagged(value: Any) -> Any:
    """The cursor value back from its JSON-native form."""
    if isinstance(value, list):
        return [_untagged(item) for item in value]
    if isinstance(value, dict):
        if value.keys() == {"t", "v"} and value["t"] in _DECODERS:
            return _DECODERS[value["t"]](value["v"])
        return {name: _untagged(item) for name, item in value.items()}
    return value


def encode_cursor(cursor: Any) -> str | None:
    """Canonical JSON text of a cursor, so that equal cursors compare equal in SQL."""
    if cursor is None:
        return None
    return json.dumps(_tagged(cursor), sort_keys=True, separators=(",", ":"))


def decode_cursor(text: str | None) -> Any:
    """The cursor stored as JSON text, with its uuid, datetime and Decimal keys typed again.

    A composite key comes back as a list; the shapes turn it into a tuple.
    """
    return None if text is None else _untagged(json.loads(text))


def cursor_json(text: str | None) -> Any:
    """The cursor stored as JSON text, JSON-ready (tagged values left as their tags)."""
    return None if text is None else json.loads(text)
