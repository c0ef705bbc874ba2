"""`python -m deploy_hooks new NAME`: a new data task file, written from the template."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def new_task_file(tasks_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Write a new task file from the template and return its path."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"name {name!r} must be snake_case: lower-case letters, digits, _")
    taken = re.compile(r"\d{14}_" + re.escape(name) + r"\.py")
    for existing in sorted(tasks_dir.glob(f"*_{name}.py")):
        if taken.fullmatch(existing.name):
            raise ValueError(f"a data task named {name!r} already exists: {existing}")
    version = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    tasks_dir.mkdir(parents=True, exist_ok=True)
    path = tasks_dir / f"{version}_{name}.py"
    if path.exists():
        raise ValueError(f"{path} already exists")
    template = resources.files("data_tasks").joinpath("templates/task.py.tmpl").read_text()
    description = name.replace("_", " ").capitalize() + "."
    path.write_text(template.format(description=description, name=name, table="my_table"))
    return path
