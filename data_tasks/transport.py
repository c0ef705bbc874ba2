"""kombu's Redis transport, except that a queue entry which is not a message is dropped and logged.

kombu decodes each entry it pops from a queue list, and reads its envelope, before anything
can refuse it: an entry that is not JSON, or JSON that is not a message envelope (`{}`, `[]`,
`"x"`), raises out of the consumer loop, and the worker restarts its consumer and cancels the
chunks it runs.
"""

from __future__ import annotations

import json
import logging
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger("data_tasks")


def is_envelope(message: Any) -> bool:
    """True for what kombu's Message needs: a dict with a properties dict and a delivery tag."""
    if not isinstance(message, dict):
        return False
    properties = message.get("properties")
    return (
        isinstance(properties, dict)
        and "delivery_tag" in properties
        and isinstance(properties.get("delivery_info", {}), dict)
        and isinstance(message.get("headers", {}), dict)
    )


class Channel(kombu_redis.Channel):
    """A Redis channel that survives a queue entry that is not a JSON message."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            logger.error("dropped a queue entry that is not a JSON message: %s", error)
            raise Empty() from None


class Transport(kombu_redis.Transport):
    """The Redis transport with that channel, delivering message envelopes only."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        if not is_envelope(message):
            # Popped already: dropping it loses nothing a publisher of this project sent.
            logger.error(
                "dropped a queue entry of %s that is not a message: %.200r", queue, message
            )
            return
        super()._deliver(message, queue)  # type: ignore[no-untyped-call]
