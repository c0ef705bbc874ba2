"""The runner's tables in a Django database, created or upgraded by the runner's own code."""

from __future__ import annotations

from typing import Any

from data_tasks.database import make_engine
from data_tasks.schema import create_tables
from data_tasks_django import conf


def create_or_upgrade(_apps: Any, schema_editor: Any) -> None:
    """A RunPython step: bring the records tables to this release's layout on the data
    tasks' alias (other aliases get none).

    Every release that changes the layout adds a migration that runs this again.
    """
    alias = schema_editor.connection.alias
    if alias != conf.database_alias():
        return
    engine = make_engine(conf.database_url(alias))
    try:
        create_tables(engine)
    finally:
        engine.dispose()
