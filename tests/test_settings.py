"""Settings read from the environment, and URLs safe to print."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_tasks.settings import Settings, redact


def test_no_environment_gives_the_documented_defaults() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    # No database is guessed: the commands refuse to run until one is named.
    assert settings.database_url == ""
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.tasks_dir == Path("tasks")
    assert (settings.chunk_seconds, settings.max_attempts) == (30.0, 5)


def test_every_variable_is_read_with_its_type() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:secret@db/app",
            "REDIS_URL": "redis://:secret@cache:6380/3",
            "DATA_TASKS_DIR": "db/data_tasks",
            "DATA_TASKS_QUEUE": "backfills",
            "DATA_TASKS_CHUNK_SECONDS": "12.5",
            "DATA_TASKS_STALE_SECONDS": "90",
            "DATA_TASKS_LOCK_SECONDS": "40",
            "DATA_TASKS_MAX_ATTEMPTS": "7",
            "DATA_TASKS_RETRY_BASE_SECONDS": "1.5",
            "DATA_TASKS_RETRY_MAX_SECONDS": "60",
            "DATA_TASKS_UNKNOWN_VERSION_RETRIES": "3",
            "DATA_TASKS_UNKNOWN_VERSION_COUNTDOWN": "4",
            "DATA_TASKS_CONNECT_TIMEOUT_SECONDS": "1",
            "DATA_TASKS_KEY_PREFIX": "app1",
            "UNRELATED": "ignored",
        }
    )

    assert settings == Settings(
        database_url="postgresql://app:secret@db/app",
        redis_url="redis://:secret@cache:6380/3",
        tasks_dir=Path("db/data_tasks"),
        queue="backfills",
        chunk_seconds=12.5,
        stale_seconds=90.0,
        lock_seconds=40.0,
        max_attempts=7,
        retry_base_seconds=1.5,
        retry_max_seconds=60.0,
        unknown_version_retries=3,
        unknown_version_countdown=4.0,
        connect_timeout_seconds=1.0,
        key_prefix="app1",
    )
    assert isinstance(settings.max_attempts, int) and isinstance(settings.chunk_seconds, float)


def test_a_value_that_is_not_a_number_names_its_variable() -> None:
    with pytest.raises(ValueError, match=r"DATA_TASKS_MAX_ATTEMPTS='many' is not a number"):
        Settings.from_env({"DATA_TASKS_MAX_ATTEMPTS": "many"})


def test_with_makes_a_changed_copy() -> None:
    settings = Settings()

    changed = settings.with_(chunk_seconds=1.0)

    assert (settings.chunk_seconds, changed.chunk_seconds) == (30.0, 1.0)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgresql+psycopg://app:s3cret@db/app", "postgresql+psycopg://app:***@db/app"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://default:s3cret@cache:6380/1", "rediss://default:***@cache:6380/1"),
        ("postgresql://app:p%40ss%2Fword@db/app", "postgresql://app:***@db/app"),
        ("redis://:s3cret@with@at@cache:6379/0", "redis://:***@cache:6379/0"),
        ("error at redis://:s3cret@cache:1/0: refused", "error at redis://:***@cache:1/0: refused"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("sqlite:///data_tasks.db", "sqlite:///data_tasks.db"),
    ],
)
def test_redact_hides_passwords_and_only_them(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "s3cret" not in redact(url)
