"""install(app) on a team's own Celery app: its jobs and routes added, its own settings kept."""

from __future__ import annotations

from types import SimpleNamespace

from celery import Celery
from kombu.entity import Queue

from data_tasks.celery import conflicts, install
from data_tasks.publisher import JOB_NAME, SWEEP_JOB_NAME
from data_tasks.settings import Settings

SETTINGS = Settings(database_url="sqlite:///unused.db", queue="data_tasks_install")


def team_app(**config: object) -> Celery:
    """A team's app configured Django-style, from an object read lazily."""
    app = Celery("proj", broker="amqp://guest:guest@127.0.0.1:5672//")
    app.config_from_object(SimpleNamespace(**config))
    return app


def test_the_jobs_carry_their_own_reliability_options_and_the_apps_tasks_keep_theirs() -> None:
    app = team_app(task_acks_late=False, task_serializer="pickle", accept_content=["json"])

    @app.task(name="proj.send_email")  # type: ignore[untyped-decorator]
    def send_email() -> None:
        """The team's own task."""

    install(app, SETTINGS)
    chunk = app.tasks[JOB_NAME]
    assert (chunk.acks_late, chunk.reject_on_worker_lost, chunk.serializer) == (True, True, "json")
    assert (chunk.ignore_result, chunk.track_started) == (True, True)
    assert app.amqp.router.route({}, JOB_NAME)["queue"].name == "data_tasks_install"
    assert app.tasks[SWEEP_JOB_NAME].acks_late is True
    email = app.tasks["proj.send_email"]
    assert (email.acks_late, email.serializer) == (False, "pickle")


def test_routes_queues_and_the_beat_schedule_are_added_to_the_apps_own() -> None:
    app = team_app(
        task_routes={"proj.*": {"queue": "proj"}},
        task_queues=[Queue("celery"), Queue("proj")],  # type: ignore[no-untyped-call]
        beat_schedule={"nightly": {"task": "proj.report", "schedule": 86400}},
    )
    install(app, SETTINGS)
    conf = app.conf
    assert conf.task_routes["proj.*"] == {"queue": "proj"}
    assert conf.task_routes[JOB_NAME] == {"queue": "data_tasks_install"}
    assert [queue.name for queue in conf.task_queues] == ["celery", "proj", "data_tasks_install"]
    assert set(conf.beat_schedule) == {"nightly", "data-tasks-sweep"}
    sweep = conf.beat_schedule["data-tasks-sweep"]
    assert sweep["task"] == SWEEP_JOB_NAME
    assert sweep["options"] == {"queue": "data_tasks_install"}


def test_app_wide_settings_left_at_celerys_default_are_set_and_chosen_ones_are_kept() -> None:
    app = team_app(worker_prefetch_multiplier=8, accept_content=["pickle"])
    install(app, SETTINGS)
    conf = app.conf
    assert conf.worker_prefetch_multiplier == 8
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert conf.worker_send_task_events is True
    assert conf.broker_transport_options["visibility_timeout"] >= 3600
    lines = conflicts(conf, SETTINGS)
    assert len(lines) == 2, lines
    assert "worker_prefetch_multiplier=8" in lines[0] and "need 1" in lines[0]
    assert "accept_content=['pickle']" in lines[1] and "'json'" in lines[1]


def test_an_app_configured_before_install_is_configured_too() -> None:
    app = Celery("proj", broker="redis://127.0.0.1:6379/12")
    assert app.conf.worker_prefetch_multiplier == 4  # reading a key loads the configuration
    install(app, SETTINGS)
    assert app.conf.worker_prefetch_multiplier == 1
    # A redis:// broker gets the transport that survives a queue entry that is not JSON.
    assert app.conf.broker_transport == "data_tasks.transport:Transport"
    assert conflicts(app.conf, SETTINGS) == []


def test_a_short_visibility_timeout_on_a_redis_broker_is_reported() -> None:
    app = Celery("proj", broker="redis://127.0.0.1:6379/12")
    app.conf.broker_transport_options = {"visibility_timeout": 60}
    install(app, SETTINGS)
    # The team's value is kept (and reported); socket timeouts it did not set are added.
    assert app.conf.broker_transport_options["visibility_timeout"] == 60
    assert app.conf.broker_transport_options["socket_timeout"] == 10.0
    (line,) = conflicts(app.conf, SETTINGS)
    assert "visibility_timeout=60" in line and "at least" in line


def test_a_second_install_on_the_same_app_changes_nothing() -> None:
    app = team_app()
    install(app, SETTINGS)
    install(app, SETTINGS.with_(queue="elsewhere"))
    assert app.conf.task_routes[JOB_NAME] == {"queue": "data_tasks_install"}
    assert app.data_tasks_settings is SETTINGS
