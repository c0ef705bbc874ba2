"""The data tasks' settings, read from the Django project's own settings.

`DATA_TASKS = {"DATABASE": "default", ...}` names the database alias (its DATABASES entry is
the records' and the batches' database) and any field of data_tasks.settings.Settings in
capitals (`"CHUNK_SECONDS": 30`). Redis comes from `DATA_TASKS["REDIS_URL"]`, else from
CELERY_BROKER_URL; the Celery app from `DATA_TASKS["CELERY_APP"]`, else `<project>.celery:app`.
Nothing is read from the environment.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from sqlalchemy.engine import URL

from data_tasks.settings import Settings

# The folder of data task files inside each installed app, and at the project's BASE_DIR.
FOLDER = "data_migrations"
# The libpq parameters a DATABASES entry's OPTIONS may carry that the records engine keeps.
_LIBPQ_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "target_session_attrs")
# DATA_TASKS keys that are not Settings fields.
_OWN_KEYS = ("DATABASE", "DIR", "CELERY_APP", "REDIS_URL")
# Settings fields DATA_TASKS may not set: they come from DATABASES and the folders.
_DERIVED = ("database_url", "tasks_dir", "more_tasks_dirs")


def options() -> dict[str, Any]:
    """The project's DATA_TASKS dict (empty when it sets none)."""
    value = getattr(django_settings, "DATA_TASKS", {})
    if not isinstance(value, dict):
        raise ImproperlyConfigured("DATA_TASKS must be a dict")
    return value


def database_alias() -> str:
    """The DATABASES alias the records live in and the batches run on."""
    alias = str(options().get("DATABASE", "default"))
    if alias not in django_settings.DATABASES:
        raise ImproperlyConfigured(
            f"DATA_TASKS['DATABASE'] is {alias!r}, which DATABASES does not define"
        )
    return alias


def database_url(alias: str) -> str:
    """An SQLAlchemy URL for a DATABASES entry (PostgreSQL only: the batches share its
    connection through psycopg)."""
    entry = django_settings.DATABASES[alias]
    engine = str(entry.get("ENGINE", ""))
    if engine != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            f"data tasks run on PostgreSQL: DATABASES[{alias!r}] uses {engine or 'no ENGINE'}"
        )
    query = {
        key: str(value)
        for key, value in (entry.get("OPTIONS") or {}).items()
        if key in _LIBPQ_OPTIONS
    }
    url = URL.create(
        "postgresql+psycopg",
        username=entry.get("USER") or None,
        password=entry.get("PASSWORD") or None,
        host=entry.get("HOST") or None,
        port=int(entry["PORT"]) if entry.get("PORT") else None,
        database=entry.get("NAME") or None,
        query=query,
    )
    return url.render_as_string(hide_password=False)


def redis_url() -> str:
    """Where the leases and queued markers live: REDIS_URL, else a Redis Celery broker."""
    explicit = options().get("REDIS_URL")
    if explicit:
        return str(explicit)
    broker = str(getattr(django_settings, "CELERY_BROKER_URL", "") or "")
    if broker.startswith(("redis://", "rediss://")):
        return broker
    raise ImproperlyConfigured(
        "DATA_TASKS['REDIS_URL'] is not set and CELERY_BROKER_URL is not a Redis URL: "
        "the data tasks keep their leases in Redis"
    )


def celery_app() -> str:
    """The project's Celery app, as `celery -A` takes it."""
    named = options().get("CELERY_APP")
    if named:
        return str(named)
    project = str(django_settings.SETTINGS_MODULE or "").rpartition(".")[0]
    if not project:
        raise ImproperlyConfigured("set DATA_TASKS['CELERY_APP'] to the project's Celery app")
    return f"{project}.celery:app"


def project_folder() -> Path:
    """The project-level folder of task files: DATA_TASKS['DIR'], else BASE_DIR/data_migrations."""
    folder = options().get("DIR")
    if folder:
        return Path(folder)
    base = getattr(django_settings, "BASE_DIR", None)
    if base is None:
        raise ImproperlyConfigured("set DATA_TASKS['DIR'] (or BASE_DIR) to the project's folder")
    return Path(base) / FOLDER


def app_folders() -> tuple[Path, ...]:
    """Each installed app's data_migrations folder that exists, in INSTALLED_APPS order."""
    found = (Path(config.path) / FOLDER for config in apps.get_app_configs())
    return tuple(folder for folder in found if folder.is_dir())


def build_settings(with_folders: bool = True) -> Settings:
    """Settings from the Django project's settings; the folders need the app registry ready."""
    values: dict[str, Any] = {}
    names = {field.name for field in fields(Settings)} - set(_DERIVED)
    for key, value in options().items():
        name = key.lower()
        if key in _OWN_KEYS:
            continue
        if name not in names:
            raise ImproperlyConfigured(f"DATA_TASKS has an unknown key {key!r}")
        values[name] = value
    values["database_url"] = database_url(database_alias())
    values["redis_url"] = redis_url()
    values["celery_app"] = celery_app()
    values["tasks_dir"] = project_folder()
    if with_folders:
        values["more_tasks_dirs"] = app_folders()
    return Settings(**values)
