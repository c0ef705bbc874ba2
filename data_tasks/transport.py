"""kombu's Redis transport, except that a queue entry which is not JSON is dropped and logged.

kombu decodes each entry it pops from a queue list before anything can refuse it; an entry
that is not JSON raises out of the consumer loop and stops the whole worker, with its chunks.
"""

from __future__ import annotations

import json
import logging
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger("data_tasks")


class Channel(kombu_redis.Channel):
    """A Redis channel that survives a queue entry that is not a JSON message."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            logger.error("dropped a queue entry that is not a JSON message: %s", error)
            raise Empty() from None


class Transport(kombu_redis.Transport):
    """The Redis transport with that channel."""

    Channel = Channel
