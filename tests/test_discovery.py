"""Finding task files by name, sorting them by version, and loading the one task each declares."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from data_tasks.discovery import Catalog, TaskFile, discover, load
from data_tasks.errors import InvalidTaskFile, UnknownVersion
from data_tasks.settings import Settings
from tests.conftest import FIXTURE_TASKS, copy_tasks


def test_files_are_sorted_by_version_whatever_their_names(tasks_dir: Path) -> None:
    copy_tasks(
        tasks_dir,
        "20250105000000_count_items_at_once.py",
        "20250101000000_count_items.py",
        "20250103000000_count_item_rows.py",
    )

    found = discover(tasks_dir)

    assert [(f.version, f.name) for f in found] == [
        ("20250101000000", "count_items"),
        ("20250103000000", "count_item_rows"),
        ("20250105000000", "count_items_at_once"),
    ]


def test_the_task_directory_comes_from_data_tasks_dir(tmp_path: Path) -> None:
    folder = copy_tasks(tmp_path / "elsewhere", "20250101000000_count_items.py")

    settings = Settings.from_env({"DATA_TASKS_DIR": str(folder)})

    assert [f.version for f in discover(settings.tasks_dir)] == ["20250101000000"]


def test_underscored_and_non_python_files_are_ignored(tasks_dir: Path) -> None:
    copy_tasks(tasks_dir, "20250101000000_count_items.py")
    (tasks_dir / "__init__.py").write_text("")
    (tasks_dir / "_helpers.py").write_text("raise RuntimeError('never imported')\n")
    (tasks_dir / "README.md").write_text("# notes\n")
    (tasks_dir / "20250102000000_draft.py.bak").write_text("syntax error (\n")
    (tasks_dir / "__pycache__").mkdir()

    assert [f.name for f in discover(tasks_dir)] == ["count_items"]


def test_loading_gives_the_task_its_version_name_and_module_docstring(tasks_dir: Path) -> None:
    copy_tasks(tasks_dir, "20250103000000_count_item_rows.py")

    task = load(discover(tasks_dir)[0])

    assert (task.version, task.name, task.shape) == (
        "20250103000000",
        "count_item_rows",
        "row iteration",
    )
    assert (
        task.description
        == "Add one to items.applied page by page: a row iteration over a select()."
    )


def reason_for(path: Path) -> str:
    """The InvalidTaskFile message for one file, which must name the file."""
    with pytest.raises(InvalidTaskFile) as raised:
        for task_file in discover(path.parent):
            load(task_file)
    assert raised.value.path == str(path)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)
    return raised.value.reason


def test_a_syntax_error_is_one_clear_error(tasks_dir: Path) -> None:
    path = tasks_dir / "20250101000000_broken.py"
    path.write_text('"""Broken."""\n\ndef broken(session:\n    pass\n')

    assert reason_for(path).startswith("syntax error at line 3")


def test_an_import_that_raises_is_one_clear_error(tasks_dir: Path) -> None:
    path = (
        copy_tasks(tasks_dir, "20240101000000_raises_at_import.py")
        / "20240101000000_raises_at_import.py"
    )

    reason = reason_for(path)

    assert reason.startswith("raised KeyError at import (line 5)")
    assert "missing" in reason


def test_a_file_without_a_data_task_is_one_clear_error(tasks_dir: Path) -> None:
    path = (
        copy_tasks(tasks_dir, "20240102000000_declares_nothing.py")
        / "20240102000000_declares_nothing.py"
    )

    assert reason_for(path).startswith("declares no data task")


def test_a_file_with_two_data_tasks_is_one_clear_error(tasks_dir: Path) -> None:
    path = (
        copy_tasks(tasks_dir, "20240103000000_declares_two.py") / "20240103000000_declares_two.py"
    )

    assert reason_for(path) == "declares more than one data task: first_change, second_change"


def test_two_files_with_one_version_are_one_clear_error(tasks_dir: Path) -> None:
    copy_tasks(tasks_dir, "20250101000000_count_items.py")
    shutil.copy(
        FIXTURE_TASKS / "20250101000000_count_items.py", tasks_dir / "20250101000000_count_again.py"
    )

    with pytest.raises(InvalidTaskFile) as raised:
        discover(tasks_dir)

    assert "version 20250101000000 is also used by" in raised.value.reason


@pytest.mark.parametrize(
    "file_name",
    [
        "2025010100000_short_version.py",
        "20250101000000-dash.py",
        "20250101000000_CamelCase.py",
        "count_items.py",
    ],
)
def test_a_bad_file_name_is_one_clear_error(tasks_dir: Path, file_name: str) -> None:
    (tasks_dir / file_name).write_text('"""A task with a bad name."""\n')

    with pytest.raises(InvalidTaskFile) as raised:
        discover(tasks_dir)

    assert raised.value.path == str(tasks_dir / file_name)
    assert "<14-digit UTC timestamp>_<snake_case_name>.py" in raised.value.reason


def test_a_missing_task_directory_is_an_invalid_task_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidTaskFile, match="does not exist"):
        discover(tmp_path / "nowhere")


def test_the_catalog_finds_a_file_added_after_it_first_looked(tasks_dir: Path) -> None:
    catalog = Catalog(tasks_dir)
    assert catalog.files() == {}

    copy_tasks(tasks_dir, "20250101000000_count_items.py")

    assert catalog.task("20250101000000").name == "count_items"
    with pytest.raises(UnknownVersion):
        catalog.task("20250102000000")
    with pytest.raises(UnknownVersion):
        catalog.task("../../etc/passwd")


def test_the_source_hash_changes_with_the_file(tasks_dir: Path) -> None:
    copy_tasks(tasks_dir, "20250101000000_count_items.py")
    [task_file] = discover(tasks_dir)
    before = task_file.source_hash()

    with task_file.path.open("a") as handle:
        handle.write("# fixed\n")

    assert TaskFile(task_file.version, task_file.name, task_file.path).source_hash() != before


def test_several_folders_are_one_catalog_in_version_order(tmp_path: Path) -> None:
    project = copy_tasks(tmp_path / "project", "20250105000000_count_items_at_once.py")
    app = copy_tasks(tmp_path / "app", "20250101000000_count_items.py")
    absent = tmp_path / "other_app"

    found = discover([project, absent, app])
    catalog = Catalog([project, absent, app])

    assert [(f.version, f.path.parent) for f in found] == [
        ("20250101000000", app),
        ("20250105000000", project),
    ]
    assert catalog.task("20250101000000").name == "count_items"


def test_a_version_used_in_two_folders_is_refused(tmp_path: Path) -> None:
    project = copy_tasks(tmp_path / "project", "20250101000000_count_items.py")
    app = copy_tasks(tmp_path / "app", "20250103000000_count_item_rows.py")
    shutil.copy(app / "20250103000000_count_item_rows.py", app / "20250101000000_other.py")

    with pytest.raises(InvalidTaskFile, match="version 20250101000000 is also used by"):
        discover([project, app])
    with pytest.raises(InvalidTaskFile, match="version 20250101000000 is also used by"):
        Catalog([project, app]).task("20250101000000")
