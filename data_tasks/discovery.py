"""Finding data task files by name and loading them by path."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from data_tasks.errors import InvalidTaskFile, UnknownVersion

if TYPE_CHECKING:
    from data_tasks.data_task import DataTask

logger = logging.getLogger("data_tasks")

FILE_PATTERN = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z][a-z0-9_]*)\.py$")
VERSION_PATTERN = re.compile(r"^\d{14}$")


@dataclass(frozen=True)
class TaskFile:
    """A data task file found in the task directory, not yet imported."""

    version: str
    name: str
    path: Path

    def source_hash(self) -> str:
        """SHA-256 of the file's bytes, to notice when a failed task's file was fixed."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(tasks_dirs: Path | Sequence[Path]) -> list[TaskFile]:
    """Every task file in the folders, sorted by version; raises on a bad name or a duplicate.

    Folders that do not exist are left out; when none exists, the first is named.
    """
    folders = [tasks_dirs] if isinstance(tasks_dirs, Path) else list(tasks_dirs)
    present = [folder for folder in folders if folder.is_dir()]
    if not present:
        raise InvalidTaskFile(str(folders[0]), "the task directory does not exist")
    found: dict[str, TaskFile] = {}
    # Sorted by name, the same order as by path within a folder, at a quarter of the cost.
    for path in (p for folder in present for p in sorted(folder.iterdir(), key=attrgetter("name"))):
        name = path.name
        if not name.endswith(".py") or name.startswith(("_", ".")):
            continue
        match = FILE_PATTERN.match(name)
        if match is None:
            raise InvalidTaskFile(
                str(path), "name must be <14-digit UTC timestamp>_<snake_case_name>.py"
            )
        version = match["version"]
        if version in found:
            raise InvalidTaskFile(
                str(path), f"version {version} is also used by {found[version].path.name}"
            )
        found[version] = TaskFile(version, match["name"], path)
    return [found[version] for version in sorted(found)]


def load(task_file: TaskFile) -> DataTask:
    """Import a task file by path and return the one data task it declares."""
    # Here, not at the top: the deploy hook lists files without importing the ORM it needs.
    from data_tasks.data_task import DataTask

    module_name = f"data_tasks_files.v{task_file.version}_{task_file.name}"
    try:
        spec = importlib.util.spec_from_file_location(module_name, task_file.path)
        if spec is None or spec.loader is None:
            raise InvalidTaskFile(str(task_file.path), "cannot be imported")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except InvalidTaskFile:
        raise
    except SyntaxError as error:
        reason = f"syntax error at line {error.lineno}: {error.msg}"
        raise InvalidTaskFile(str(task_file.path), reason) from None
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        reason = f"raised {type(error).__name__} at import (line {where.lineno}): {error}"
        raise InvalidTaskFile(str(task_file.path), reason) from None
    declared = [value for value in vars(module).values() if isinstance(value, DataTask)]
    if not declared:
        raise InvalidTaskFile(
            str(task_file.path),
            "declares no data task (decorate a function with one_shot, keyset_backfill, "
            "row_iteration or custom_batches)",
        )
    if len(declared) > 1:
        names = ", ".join(sorted(task.name for task in declared))
        raise InvalidTaskFile(str(task_file.path), f"declares more than one data task: {names}")
    task = declared[0]
    task.version = task_file.version
    task.name = task_file.name
    task.description = (module.__doc__ or task.description or "").strip()
    # Keep it importable by name so that pickling-free introspection and tracebacks work.
    sys.modules.setdefault(module_name, module)
    return task


class Catalog:
    """The data tasks of one directory or several, loaded on first use and kept."""

    def __init__(self, tasks_dirs: Path | Sequence[Path]) -> None:
        self.tasks_dirs = [tasks_dirs] if isinstance(tasks_dirs, Path) else list(tasks_dirs)
        self._files: dict[str, TaskFile] | None = None
        # By version: the source hash it was loaded from, and the task.
        self._loaded: dict[str, tuple[str, DataTask]] = {}
        # Names of stray files already logged.
        self._strays: set[str] = set()

    def files(self, refresh: bool = False) -> dict[str, TaskFile]:
        """Task files by version."""
        if self._files is None or refresh:
            self._files = {task_file.version: task_file for task_file in discover(self.tasks_dirs)}
        return self._files

    def file(self, version: str) -> TaskFile:
        """The file of a version, looked up by its own name only.

        A worker runs one version at a time: a stray or broken file elsewhere in the folder
        must not fail it (the deploy hook refuses such a folder before anything runs).
        """
        if not VERSION_PATTERN.match(version):
            raise UnknownVersion(version)
        self._warn_about_strays()
        found = [
            TaskFile(version, match["name"], path)
            for folder in self.tasks_dirs
            for path in sorted(folder.glob(f"{version}_*.py"))
            if (match := FILE_PATTERN.match(path.name)) is not None
        ]
        if not found:
            raise UnknownVersion(version)
        if len(found) > 1:
            raise InvalidTaskFile(
                str(found[1].path), f"version {version} is also used by {found[0].path.name}"
            )
        return found[0]

    def _warn_about_strays(self) -> None:
        """Log each file that is not a task file's name, once per process."""
        for path in (p for folder in self.tasks_dirs for p in sorted(folder.glob("*.py"))):
            if path.name.startswith(("_", ".")) or FILE_PATTERN.match(path.name):
                continue
            if path.name not in self._strays:
                self._strays.add(path.name)
                logger.warning(
                    "ignoring %s: not a task file name (the deploy hook refuses it)", path
                )

    def task(self, version: str) -> DataTask:
        """The loaded data task of a version, loaded again when its file has changed."""
        task_file = self.file(version)
        try:
            digest = task_file.source_hash()
        except OSError:
            raise UnknownVersion(version) from None
        cached = self._loaded.get(version)
        if cached is None or cached[0] != digest:
            # A fixed file resumes a failed task without restarting the workers.
            cached = self._loaded[version] = (digest, load(task_file))
        return cached[1]

    def source_hash(self, version: str) -> str:
        """The hash of the file a version's task was last loaded from (load it first)."""
        if version not in self._loaded:
            self.task(version)
        return self._loaded[version][0]
