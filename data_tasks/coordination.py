"""Everything the runner keeps in Redis: locks, queued markers and the shutdown flag.

Redis is the fast path; the records database is the safety net. Losing every key here
(a Redis restart) costs time, never correctness: the sweep rebuilds what is missing.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.lock import Lock
from redis.retry import Retry

from data_tasks.errors import PassRunning, ServiceUnavailable
from data_tasks.log import first_line
from data_tasks.settings import Settings, redact

# A queued marker outlives any sensible wait in the queue; after it, the sweep re-publishes
# (safely: the new claim's epoch fences the old message off).
QUEUED_MARKER_SECONDS = 24 * 3600
SHUTDOWN_FLAG_SECONDS = 3600
# A deploy hook that finds another pass (a sweep, another hook) holding the hook lock waits
# this long, then leaves the work to it: the README's 10 s bound of the hook includes it.
HOOK_LOCK_WAIT_SECONDS = 3.0
# The hook lock lapses this long after a pass that died holding it.
HOOK_LOCK_SECONDS = 60.0
# Taking and releasing the hook lock are single tiny commands: a pass whose Redis froze after
# it took the lock pays this, not a whole command timeout, to give the lock back.
HOOK_LOCK_COMMAND_SECONDS = 1.0

# Extend the lock if we still own it, and say whether our worker is shutting down: one round trip.
_RENEW_AND_POLL = """
local owned = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    owned = 1
end
return {owned, redis.call('exists', KEYS[2])}
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def connect(settings: Settings, timeout: float | None = None) -> redis.Redis:
    """A Redis client with short timeouts, so that an outage is an error, not a hang.

    With `timeout` (the deploy hook, the commands) every command waits at most that long for
    an answer; without it (workers) the connect timeout is the setting's and a command waits
    up to 10 s. A command that timed out is never sent again: a Redis that accepts
    connections but does not answer (frozen, overloaded) would otherwise cost the wait again
    for every retry. A dropped connection is retried once, at once.
    """
    seconds = timeout if timeout is not None else settings.connect_timeout_seconds
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=seconds,
        socket_timeout=seconds if timeout is not None else max(seconds, 10.0),
        retry_on_timeout=False,
        retry=Retry(
            ExponentialBackoff(cap=0.5, base=0.1), 1, supported_errors=(RedisConnectionError,)
        ),
    )


def unavailable(settings: Settings, error: RedisError) -> ServiceUnavailable:
    """The one-line error for a Redis that cannot be reached."""
    return ServiceUnavailable("Redis", redact(settings.redis_url), first_line(error))


class Lease:
    """A lane's lease: a Redis key holding this runner's token, renewed by a thread.

    The lease says "this lane's worker is alive": the sweep reclaims a running lane only once
    its lease has lapsed. A thread renews it, so a batch of any length keeps it while its
    process lives, and polls the worker's shutdown flag on the way. The lease never decides who
    may commit: the lane's epoch does, so a chunk that the database let start takes the lease
    over from whoever held it.
    """

    def __init__(self, client: redis.Redis, name: str, seconds: float, flag_key: str) -> None:
        self.client = client
        self.name = name
        self.milliseconds = max(1, int(seconds * 1000))
        self.flag_key = flag_key
        self.token = secrets.token_hex(16)
        self._renew = client.register_script(_RENEW_AND_POLL)
        self._release = client.register_script(_RELEASE)
        # Renewed ten times per lease, and the shutdown flag polled at least once a second.
        self.interval = min(1.0, seconds / 10)
        self.lost = False
        self.shutting_down = False
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> None:
        """Hold the lease from now on, whoever held it before, and keep renewing it."""
        self.client.set(self.name, self.token, px=self.milliseconds)
        self._thread = threading.Thread(target=self._keep, name=f"lease {self.name}", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                owned, shutting_down = self._renew(
                    keys=[self.name, self.flag_key], args=[self.token, self.milliseconds]
                )
                if not owned:
                    # Lapsed (a Redis restart) and free: take it back; held by another: lost.
                    taken = self.client.set(self.name, self.token, nx=True, px=self.milliseconds)
                    self.lost = not taken
                self.shutting_down = bool(shutting_down)
                self.error = None
            except RedisError as error:
                self.error = first_line(error)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns early (True) when the worker begins shutting down."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.shutting_down:
                return True
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return self.shutting_down

    def release(self) -> None:
        """Stop renewing, and give the lease back if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._release(keys=[self.name], args=[self.token])
        except RedisError:
            pass  # It expires by itself; the epoch fences anyone who outlives it.


class HookLock(Lock):
    """The hook lock; raises PassRunning when another pass still holds it after the wait."""

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        """Take the lock, waiting at most HOOK_LOCK_WAIT_SECONDS for the pass that holds it."""
        if not super().acquire(*args, **kwargs):
            # Another pass does the same work with the same files or newer ones; failing
            # here would fail a release for a pass that is going fine.
            raise PassRunning(self.name)
        return True


class Coordinator:
    """The runner's Redis keys, under one prefix."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.prefix = settings.key_prefix
        self._unmark = client.register_script(_RELEASE)
        self._lock_client: redis.Redis | None = None

    def lease(self, version: str, lane: int, hostname: str) -> Lease:
        """The lease on running one lane of a version."""
        return Lease(
            self.client,
            self.lease_key(version, lane),
            self.settings.lock_seconds,
            self.shutdown_key(hostname),
        )

    def lease_key(self, version: str, lane: int) -> str:
        """The Redis key of a lane's lease."""
        return f"{self.prefix}:lease:{version}:{lane}"

    def queued_key(self, version: str, lane: int) -> str:
        """The Redis key of a lane's queued marker."""
        return f"{self.prefix}:queued:{version}:{lane}"

    def hook_lock(self, seconds: float = HOOK_LOCK_SECONDS) -> HookLock:
        """The lock that serialises deploy hooks and sweeps (redis-py's Lock)."""
        return HookLock(
            self.lock_client(),
            f"{self.prefix}:hook",
            timeout=seconds,
            blocking=True,
            blocking_timeout=HOOK_LOCK_WAIT_SECONDS,
        )

    def lock_client(self) -> redis.Redis:
        """A client on the same Redis whose commands wait HOOK_LOCK_COMMAND_SECONDS at most."""
        if self._lock_client is None:
            pool = self.client.connection_pool
            kwargs = {**pool.connection_kwargs}
            kwargs["socket_timeout"] = min(
                kwargs.get("socket_timeout") or HOOK_LOCK_COMMAND_SECONDS, HOOK_LOCK_COMMAND_SECONDS
            )
            self._lock_client = redis.Redis(
                connection_pool=redis.ConnectionPool(
                    connection_class=pool.connection_class, max_connections=2, **kwargs
                )
            )
        return self._lock_client

    def close(self) -> None:
        """Release both clients' connections."""
        if self._lock_client is not None:
            self._lock_client.close()
            self._lock_client.connection_pool.disconnect()
        self.client.close()

    def held_leases(self, lanes: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """The (version, lane) pairs whose lease is held now (one pipelined round trip)."""
        lanes = list(lanes)
        if not lanes:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for version, lane in lanes:
            pipe.exists(self.lease_key(version, lane))
        return {pair for pair, held in zip(lanes, pipe.execute(), strict=True) if held}

    def mark_queued(self, epochs: Mapping[tuple[str, int], int]) -> None:
        """Remember that a job for each (version, lane) at an epoch was handed to the broker."""
        if not epochs:
            return
        pipe = self.client.pipeline(transaction=False)
        for (version, lane), epoch in epochs.items():
            pipe.set(self.queued_key(version, lane), epoch, ex=QUEUED_MARKER_SECONDS)
        pipe.execute()

    def unmark_queued(self, version: str, lane: int, epoch: int) -> None:
        """Forget the queued marker of a lane at an epoch, because a worker took that job."""
        # A worker killed before its start commits leaves the lane enqueued with no marker,
        # so the sweep publishes it again instead of waiting for the broker's visibility timeout.
        self._unmark(keys=[self.queued_key(version, lane)], args=[epoch])

    def queued_epochs(self, lanes: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        """The epoch each lane was last queued at, None where Redis has no marker."""
        lanes = list(lanes)
        if not lanes:
            return {}
        values = self.client.mget([self.queued_key(version, lane) for version, lane in lanes])
        return {
            pair: int(value) if value is not None else None
            for pair, value in zip(lanes, values, strict=True)
        }

    def shutdown_key(self, hostname: str) -> str:
        """The flag that tells chunks in a worker's children that the worker is stopping."""
        return f"{self.prefix}:shutdown:{hostname}"

    def set_shutting_down(self, hostname: str, value: bool = True) -> None:
        """Raise or clear a worker's shutdown flag."""
        if value:
            self.client.set(self.shutdown_key(hostname), 1, ex=SHUTDOWN_FLAG_SECONDS)
        else:
            self.client.delete(self.shutdown_key(hostname))
