"""The worker app the benchmark starts: the project's app plus an empty job for the baseline."""

from __future__ import annotations

import os

import redis

from worker.app import app

# The empty job's only work is counting itself, so the baseline knows when all have run.
NOOP_COUNTER = "noop_done"
_client: redis.Redis | None = None


NOOP_JOB = "bench.noop"


@app.task(name=NOOP_JOB, ignore_result=True)  # type: ignore[untyped-decorator]
def noop() -> None:
    """An empty job: the cost of a Celery round trip and nothing else."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    _client.incr(noop_counter(os.environ["DATA_TASKS_KEY_PREFIX"]))


def noop_counter(prefix: str) -> str:
    """The counter's key, under a run's key prefix."""
    return f"{prefix}:{NOOP_COUNTER}"


__all__ = ["NOOP_JOB", "app", "noop", "noop_counter"]
