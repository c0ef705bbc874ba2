"""`install(app)`: the data tasks on a Celery app the team already has, on whatever broker it uses.

The chunk and sweep jobs carry their reliability options themselves (late acks, JSON, no
result), so the app's other tasks keep behaving as before. The few settings Celery only has
app-wide are set when the app left them at Celery's default; a value the app chose is kept,
and the worker says once at start what the data tasks would need instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import signals
from celery.app.defaults import DEFAULTS
from kombu.entity import Exchange, Queue
from redis.exceptions import RedisError

from data_tasks.coordination import Coordinator, connect
from data_tasks.database import MissingDriver, require_driver
from data_tasks.errors import MissingDatabase
from data_tasks.jobs import run_chunk_job, sweep_job
from data_tasks.publisher import JOB_NAME, SWEEP_JOB_NAME
from data_tasks.runtime import Prepare
from data_tasks.settings import Settings, read_dotenv

logger = logging.getLogger("data_tasks")

# What each job needs from its own messages, whatever the app's defaults.
TASK_OPTIONS: dict[str, Any] = {
    # At least once: a chunk killed mid-way is delivered again; the records make that safe.
    "acks_late": True,
    "reject_on_worker_lost": True,
    # JSON only: a message can never make a worker unpickle an object.
    "serializer": "json",
    # Progress lives in task_records; the chunk summary travels in Flower's events.
    "ignore_result": True,
    "track_started": True,
    # Not registered on every other app this process builds.
    "shared": False,
}
# The Redis transport that drops a queue entry which is not JSON instead of stopping the worker.
HARDENED_REDIS_TRANSPORT = "data_tasks.transport:Transport"
SWEEP_ENTRY = "data-tasks-sweep"
# The usage/configuration exit code of every command (deploy_hooks.exit_codes.USAGE).
USAGE_EXIT = 64

# The attribute an installed app carries: the settings its jobs run with.
INSTALLED = "data_tasks_settings"


def app_wide_needs(settings: Settings) -> dict[str, tuple[Any, str]]:
    """The app-wide settings the data tasks need: value, and why."""
    needs: dict[str, tuple[Any, str]] = {
        "worker_prefetch_multiplier": (1, "a process reserves one chunk at a time"),
        "worker_cancel_long_running_tasks_on_connection_loss": (
            True,
            "a chunk redelivered after a lost connection must not run twice at once",
        ),
        "worker_send_task_events": (True, "Flower shows chunk progress from task events"),
        "task_send_sent_event": (True, "Flower lists queued chunks"),
        "broker_connection_retry_on_startup": (True, "a worker waits for its broker at start"),
        "worker_enable_soft_shutdown_on_idle": (True, "a cold shutdown lets a batch finish"),
    }
    if settings.soft_shutdown_seconds > 0:
        needs["worker_soft_shutdown_timeout"] = (
            settings.soft_shutdown_seconds,
            "running chunks finish their batch on a cold shutdown",
        )
    return needs


def minimum_visibility(settings: Settings) -> float:
    """The shortest visibility timeout under which a waiting or running chunk is not redelivered."""
    # A countdown message (a retry's backoff) and a chunk both count against it: twice over.
    return 2 * (settings.retry_max_seconds + settings.chunk_seconds)


def _redis_like(broker_url: str) -> bool:
    """True for the brokers that redeliver unacked messages after a visibility timeout."""
    return broker_url.split("://", 1)[0] in ("redis", "rediss", "sqs")


def configure(conf: Any, settings: Settings) -> None:
    """Route, declare and schedule the jobs; fill in app-wide settings left at Celery's default."""
    for key, (value, _why) in app_wide_needs(settings).items():
        if conf.get(key) == DEFAULTS.get(key):
            conf[key] = value
    options = dict(conf.get("broker_transport_options") or {})
    options.setdefault("visibility_timeout", max(3600.0, minimum_visibility(settings)))
    broker_url = str(conf.broker_url or "")
    if _redis_like(broker_url):
        # A Redis that accepts connections but never answers makes a command fail after
        # socket_timeout instead of hanging (kombu's default waits for ever); a timed-out
        # command is not sent again on its own.
        options.setdefault("socket_connect_timeout", settings.connect_timeout_seconds)
        options.setdefault("socket_timeout", max(settings.connect_timeout_seconds, 10.0))
        options.setdefault("retry_on_timeout", False)
    conf["broker_transport_options"] = options
    if conf.get("broker_transport") is None and broker_url.startswith("redis://"):
        conf["broker_transport"] = HARDENED_REDIS_TRANSPORT

    ours = {JOB_NAME: {"queue": settings.queue}, SWEEP_JOB_NAME: {"queue": settings.queue}}
    routes = conf.get("task_routes")
    if routes is None:
        conf["task_routes"] = ours
    elif isinstance(routes, dict):
        conf["task_routes"] = {**routes, **ours}
    else:
        conf["task_routes"] = (ours, *(routes if isinstance(routes, list | tuple) else [routes]))
    # An app that lists its queues gets ours added; otherwise Celery declares it on the
    # first publish and at the start of a worker that consumes it (task_create_missing_queues).
    queues = conf.get("task_queues")
    if isinstance(queues, list | tuple) and all(q.name != settings.queue for q in queues):
        exchange = Exchange(settings.queue, type="direct")  # type: ignore[no-untyped-call]
        queue = Queue(settings.queue, exchange, settings.queue)  # type: ignore[no-untyped-call]
        conf["task_queues"] = [*queues, queue]

    if settings.sweep_seconds > 0:
        schedule = dict(conf.get("beat_schedule") or {})
        schedule.setdefault(
            SWEEP_ENTRY,
            {
                "task": SWEEP_JOB_NAME,
                "schedule": settings.sweep_seconds,
                "options": {"queue": settings.queue},
            },
        )
        conf["beat_schedule"] = schedule


def conflicts(conf: Any, settings: Settings) -> list[str]:
    """One line per app-wide setting the app chose differently from what the data tasks need."""
    lines = []
    for key, (value, why) in app_wide_needs(settings).items():
        if conf.get(key) != value:
            lines.append(
                f"data tasks: {key}={conf.get(key)!r} is set by this app; "
                f"the data tasks need {value!r} ({why})"
            )
    accept = list(conf.get("accept_content") or [])
    if "json" not in accept and "application/json" not in accept:
        lines.append(
            f"data tasks: accept_content={accept!r} is set by this app; "
            "the data tasks need it to include 'json' (their messages are JSON)"
        )
    visibility = (conf.get("broker_transport_options") or {}).get("visibility_timeout")
    least = minimum_visibility(settings)
    if _redis_like(str(conf.broker_url or "")) and visibility is not None and visibility < least:
        lines.append(
            f"data tasks: broker_transport_options visibility_timeout={visibility!r} is set by "
            f"this app; the data tasks need at least {least:g} (else a waiting chunk is "
            "delivered twice)"
        )
    return lines


class WorkerHooks:
    """What a worker running this app does at start and stop, for the data tasks."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        # True in the worker's main process once it started with this app.
        self.active = False

    def connect(self) -> None:
        """Connect to Celery's worker signals (they fire for every app: each hook checks)."""
        signals.worker_init.connect(self.on_init, weak=False)
        signals.celeryd_after_setup.connect(self.on_setup, weak=False)
        signals.worker_ready.connect(self.on_ready, weak=False)
        signals.worker_shutting_down.connect(self.on_shutting_down, weak=False)

    def on_init(self, sender: Any = None, **_: Any) -> None:
        """Refuse to start without a database (one line, exit 64); flag a soft shutdown's start."""
        if getattr(sender, "app", None) is not self.app:
            return
        self.active = True
        if not self.settings.database_url:
            print(f"error: {MissingDatabase()}", file=sys.stderr, flush=True)
            raise SystemExit(USAGE_EXIT)
        try:
            # At start, not at every job: a missing driver is one line naming the extra.
            require_driver(self.settings.database_url)
        except MissingDriver as error:
            raise SystemExit(f"error: {error}") from None
        # SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT (Heroku), waits
        # worker_soft_shutdown_timeout before sending worker_shutting_down; chunks must hear of
        # it at the start of that wait to finish their batch and hand over in time.
        wait = getattr(sender, "wait_for_soft_shutdown", None)
        if wait is None:
            return

        def flag_then_wait() -> None:
            self.set_flag(sender.hostname, True)
            wait()

        sender.wait_for_soft_shutdown = flag_then_wait

    def on_setup(self, sender: Any = None, instance: Any = None, **_: Any) -> None:
        """Say once, at start, which of the app's own settings the data tasks would need."""
        app = getattr(instance, "app", None)
        if app is not None and app is self.app:
            for line in conflicts(app.conf, self.settings):
                logger.warning(line)

    def on_ready(self, sender: Any = None, **_: Any) -> None:
        """A worker that starts under a name clears the flag its predecessor may have left."""
        if self.active:
            self.set_flag(sender.hostname, False)

    def on_shutting_down(self, sender: Any = None, **_: Any) -> None:
        """Chunks in this worker finish their batch, enqueue their successor and return."""
        # A prefork child is not told about SIGTERM (celery#2807): the main process raises a
        # flag in Redis that every chunk polls between batches.
        if self.active:
            self.set_flag(str(sender), True)

    def set_flag(self, hostname: str, value: bool) -> None:
        """Raise or clear the shutdown flag of a worker; a Redis outage is only logged."""
        try:
            Coordinator(connect(self.settings), self.settings).set_shutting_down(hostname, value)
        except RedisError as error:
            action = "raise" if value else "clear"
            logger.warning("could not %s the shutdown flag: %s", action, error)


def install(app: Any, settings: Settings | None = None, prepare: Prepare | None = None) -> None:
    """Register the chunk and sweep jobs on a Celery app, route them and schedule the sweep.

    `settings` defaults to Settings.from_env(), after ./.env (variables already set win).
    Leases and markers stay on REDIS_URL; the jobs travel on the app's own broker.
    `prepare` is called on the runtime each worker process builds, before its first job.
    """
    if getattr(app, INSTALLED, None) is not None:
        return  # a second call (an app module imported twice) changes nothing
    if settings is None:
        read_dotenv()
        settings = Settings.from_env()
    setattr(app, INSTALLED, settings)

    @app.task(name=JOB_NAME, bind=True, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def run_chunk(self: Any, **kwargs: Any) -> dict[str, Any]:
        """Run one chunk of the data task the message names (by version and epoch only)."""
        return run_chunk_job(self, settings, kwargs, prepare)

    @app.task(name=SWEEP_JOB_NAME, bind=True, **TASK_OPTIONS)  # type: ignore[untyped-decorator]
    def sweep(self: Any) -> dict[str, Any]:
        """The deploy hook's pass on a schedule: re-publish lost jobs, reclaim dead runs."""
        return sweep_job(self, settings, prepare)

    # config_from_object is read lazily: fill in the settings once the app's own are loaded.
    if app.configured:
        configure(app.conf, settings)
    else:
        app.on_after_configure.connect(
            lambda sender, **_: configure(sender.conf, settings), weak=False
        )
    WorkerHooks(app, settings).connect()
