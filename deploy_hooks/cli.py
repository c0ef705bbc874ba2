"""`python -m deploy_hooks <command>`: the operator commands, a thin layer over data_tasks."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from types import FrameType
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from data_tasks import operations
from data_tasks.coordination import unavailable
from data_tasks.data_task import Progress
from data_tasks.database import database_error
from data_tasks.errors import DataTaskError
from data_tasks.lanes import lane_line
from data_tasks.runtime import COMMAND_TIMEOUTS, Prepare, Runtime
from data_tasks.settings import Settings, read_dotenv
from deploy_hooks.exit_codes import FAILED, OK, TIMED_OUT, USAGE, fail
from deploy_hooks.formatting import bar, format_record, format_seconds, format_table
from deploy_hooks.new_task import new_task_file
from deploy_hooks.publishing import LazyCeleryPublisher


def installed_version() -> str:
    """`deferred-data-tasks X.Y.Z`, the version pip installed (what a bug report needs)."""
    try:
        return f"deferred-data-tasks {metadata.version('deferred-data-tasks')}"
    except metadata.PackageNotFoundError:
        return "deferred-data-tasks (not installed: a source checkout)"


Handler = Callable[[Runtime, argparse.Namespace], int]


def cmd_status(runtime: Runtime, args: argparse.Namespace) -> int:
    """Print every data task's record."""
    views = operations.status(runtime)
    if args.json:
        print(json.dumps([view.as_dict() for view in views], indent=2))
    else:
        print(format_table(views))
        for view in views:
            if len(view.lanes) > 1:
                print(f"\n{view.record.version}: {len(view.lanes)} lanes")
                print("\n".join(lane_line(lane) for lane in view.lanes))
    return OK


def cmd_show(runtime: Runtime, args: argparse.Namespace) -> int:
    """Print one record whole, then its history oldest first."""
    view = operations.show(runtime, args.version)
    rows = operations.history(runtime, args.version)[::-1]
    if args.json:
        print(json.dumps({**view.as_dict(), "history": [row.as_dict() for row in rows]}, indent=2))
    else:
        print(format_record(view) + "\nhistory:\n" + "\n".join(row.line() for row in rows))
    return OK


def cmd_history(runtime: Runtime, args: argparse.Namespace) -> int:
    """Print the status changes and operator commands, newest first."""
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be at least 1, not {args.limit}", file=sys.stderr)
        return USAGE
    rows = operations.history(runtime, args.version, args.limit)
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print("\n".join(row.line() for row in rows) if rows else "no history yet")
    return OK


def cmd_run(runtime: Runtime, args: argparse.Namespace) -> int:
    """Run a task in this process with a live progress bar."""
    if not args.inline:
        print(
            "error: run needs --inline (workers run what the deploy hook, retry or resume enqueue)",
            file=sys.stderr,
        )
        return USAGE
    live = sys.stdout.isatty()

    def show_progress(summary: dict[str, Any]) -> None:
        if "processed" not in summary:
            return  # a chunk that never started (its file is broken) has no progress
        seconds = float(summary.get("seconds") or 0.0)
        rate = summary.get("rows", 0) / seconds if seconds > 0 else None
        progress = Progress(summary["processed"], summary.get("total"), rows_per_second=rate)
        print(("\r" if live else "") + bar(progress), end="" if live else "\n", flush=True)

    name = operations.show(runtime, args.version).record.name
    print(f"running {args.version} {name} inline (Ctrl-C stops after the current batch)")
    with _interrupt_flag() as interrupted:
        run = operations.run_inline(
            runtime,
            args.version,
            on_progress=show_progress,
            on_chunk=show_progress,
            should_stop=interrupted,
            actor=args.actor,
        )
    if live:
        print()
    record = run.record
    assert record is not None
    rows = sum(int(chunk.get("rows") or 0) for chunk in run.chunks)
    seconds = sum(float(chunk.get("seconds") or 0.0) for chunk in run.chunks)
    where = f"{record.version} {record.name}"
    if run.handed_over:
        done = operations.show(runtime, record.version).progress.processed
        print(f"stopped {where} at {done} rows; the workers take it from its cursor")
        return FAILED
    if record.status == "succeeded":
        print(f"succeeded {where}: {rows} rows in {len(run.chunks)} chunk(s), {seconds:.2f}s")
        return OK
    print(f"{record.status} {where}: {record.last_error or 'see `show`'}", file=sys.stderr)
    return FAILED


@contextmanager
def _interrupt_flag() -> Iterator[Callable[[], bool]]:
    """A flag raised by Ctrl-C, so that the batch in flight finishes instead of being cut."""
    raised = False

    def handler(_signum: int, _frame: FrameType | None) -> None:
        nonlocal raised
        raised = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: raised
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_retry(runtime: Runtime, args: argparse.Namespace) -> int:
    """Resume a failed task at its cursor."""
    return _enqueued(operations.retry(runtime, args.version, args.actor))


def cmd_resume(runtime: Runtime, args: argparse.Namespace) -> int:
    """Resume a paused task at its cursor."""
    return _enqueued(operations.resume(runtime, args.version, args.actor))


def cmd_rerun(runtime: Runtime, args: argparse.Namespace) -> int:
    """Run a task again from the beginning, only when confirmed."""
    if not args.yes:
        print(
            f"error: rerun applies every batch of {args.version} again from the beginning; "
            "add --yes to do it",
            file=sys.stderr,
        )
        return USAGE
    return _enqueued(operations.rerun(runtime, args.version, args.actor))


def _enqueued(item: Any) -> int:
    print(f"enqueued {item.version} {item.name} (epoch {item.epoch}, {item.reason})")
    return OK


def cmd_pause(runtime: Runtime, args: argparse.Namespace) -> int:
    """Pause a queued or running task after its current batch."""
    left = operations.pause(runtime, args.version, args.actor)
    print(f"paused {args.version} (was {left}; a running chunk stops after its batch)")
    return OK


def cmd_cancel(runtime: Runtime, args: argparse.Namespace) -> int:
    """Cancel a task that is not done."""
    left = operations.cancel(runtime, args.version, args.actor)
    print(f"cancelled {args.version} (was {left})")
    return OK


def cmd_skip(runtime: Runtime, args: argparse.Namespace) -> int:
    """Record tasks as done without running them."""
    if bool(args.versions) == bool(args.all_pending):
        print("error: skip takes VERSION... or --all-pending, not both", file=sys.stderr)
        return USAGE
    marked = operations.skip(runtime, args.versions, args.all_pending, args.actor)
    names = {view.record.version: view.record.name for view in operations.status(runtime)}
    for version in marked:
        print(f"skipped {version} {names.get(version, '')}".rstrip())
    if not marked:
        print("nothing to skip: no pending data tasks")
    return OK


def cmd_wait(runtime: Runtime, args: argparse.Namespace) -> int:
    """Wait for tasks to succeed: the deploy gate of the next release."""
    outcome = operations.wait(
        runtime, args.versions, timeout=args.timeout, poll_seconds=args.interval
    )
    if outcome.succeeded:
        print(f"done: {len(outcome.done)} data task(s) succeeded or skipped")
        return OK
    for version, reason in outcome.failed.items():
        print(f"failed {version}: {reason}", file=sys.stderr)
    if outcome.failed:
        return FAILED
    views = {view.record.version: view for view in operations.status(runtime)}
    left = ", ".join(
        f"{v} {views[v].record.status} {views[v].progress.processed}"
        + (f"/{views[v].progress.total}" if views[v].progress.total else "")
        for v in outcome.unfinished
    )
    print(f"timed out after {format_seconds(args.timeout)}; not done: {left}", file=sys.stderr)
    return TIMED_OUT


def cmd_dry_run(runtime: Runtime, args: argparse.Namespace) -> int:
    """Run a few batches in a transaction that is rolled back; report the rows they change."""
    try:
        report = operations.dry_run(runtime, args.version, batches=args.batches)
    except (DataTaskError, RedisError):
        raise
    except Exception as error:
        # The task's own SQL or code failed: one line, and the traceback when asked for.
        if args.traceback:
            traceback.print_exc()
        print(f"error: dry run of {args.version} failed: {_first_line(error)}", file=sys.stderr)
        return FAILED
    if args.json:
        print(
            json.dumps(
                {
                    "version": report.version,
                    "name": report.name,
                    "start_cursor": report.start_cursor,
                    "exhausted": report.exhausted,
                    "rows_changed": report.rows_changed,
                    "batches": [vars(batch) for batch in report.batches],
                },
                indent=2,
            )
        )
        return OK
    start = json.dumps(report.start_cursor)
    print(f"dry run of {report.version} {report.name} from cursor {start} (rolled back)")
    for batch in report.batches:
        print(
            f"batch {batch.number}: {batch.size} keys, {batch.rows_changed} rows changed "
            f"by {batch.statements} statement(s), next cursor {json.dumps(batch.next_cursor)}"
        )
    if report.exhausted:
        print("no more batches: the task would finish here")
    print(f"would change {report.rows_changed} rows in {len(report.batches)} batch(es)")
    return OK


def _first_line(error: BaseException) -> str:
    """The first line of an error; a driver's own message rather than SQLAlchemy's wrapping."""
    message = str(getattr(error, "orig", None) or error).strip()
    first = message.splitlines()[0] if message else ""
    return f"{type(getattr(error, 'orig', None) or error).__name__}: {first}".rstrip(": ")


def cmd_new(settings: Settings, args: argparse.Namespace) -> int:
    """Write a new task file."""
    path = new_task_file(settings.tasks_dir, args.name)
    print(f"created {path}")
    return OK


def build_parser(
    prog: str = "python -m deploy_hooks", description: str | None = None
) -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog=prog, description=description or __doc__)
    parser.add_argument("--version", action="version", version=installed_version())
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database-url",
        # SUPPRESS: the option given before the command is not reset by the command's parser.
        default=argparse.SUPPRESS,
        help="the records database (default: DATABASE_URL, from the environment or ./.env)",
    )
    database.add_argument(
        "--actor",
        default=argparse.SUPPRESS,
        help="who runs the command, for the history (default: DATA_TASKS_ACTOR, else user@host)",
    )
    parser.add_argument("--database-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--actor", default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Handler, help: str, version: bool = True) -> Any:
        sub = commands.add_parser(name, help=help, description=help, parents=[database])
        if version:
            sub.add_argument("version", help="the data task's 14-digit version")
        sub.set_defaults(handler=handler)
        return sub

    status = command("status", cmd_status, "show every data task's record", version=False)
    status.add_argument("--json", action="store_true", help="every record field, for scripts")
    show = command("show", cmd_show, "show one record whole, with its traceback")
    show.add_argument("--json", action="store_true", help="as JSON")
    history = command("history", cmd_history, "status changes, newest first", version=False)
    history.add_argument("version", nargs="?", help="one data task's (default: every task's)")
    history.add_argument("--limit", type=int, default=None, help="at most this many rows")
    history.add_argument("--json", action="store_true", help="as JSON")
    run = command("run", cmd_run, "run a data task in this process")
    run.add_argument("--inline", action="store_true", help="run here, with a live progress bar")
    command("retry", cmd_retry, "resume a failed data task at its cursor")
    command("pause", cmd_pause, "pause a queued or running data task after its batch")
    command("resume", cmd_resume, "resume a paused data task at its cursor")
    command("cancel", cmd_cancel, "never run a data task (further)")
    skip = command("skip", cmd_skip, "record data tasks as done without running", version=False)
    skip.add_argument("versions", nargs="*", help="versions to skip")
    skip.add_argument("--all-pending", action="store_true", help="skip every pending data task")
    rerun = command("rerun", cmd_rerun, "run a data task again from the beginning")
    rerun.add_argument("--yes", action="store_true", help="confirm: every batch runs again")
    wait = command("wait", cmd_wait, "wait until data tasks succeed (a deploy gate)", version=False)
    wait.add_argument("versions", nargs="*", help="versions to wait for (default: all)")
    wait.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    wait.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    dry = command("dry-run", cmd_dry_run, "run batches in a transaction that is rolled back")
    dry.add_argument("--batches", type=int, default=1, help="how many batches (default 1)")
    dry.add_argument("--json", action="store_true", help="as JSON")
    dry.add_argument("--traceback", action="store_true", help="print the traceback of a failure")
    new = commands.add_parser("new", help="write a new task file from the template")
    new.add_argument("name", help="snake_case name of the data task")
    new.set_defaults(handler=cmd_new, settings_only=True)
    return parser


def main(
    argv: Sequence[str] | None = None,
    settings: Settings | None = None,
    prepare: Prepare | None = None,
    prog: str = "python -m deploy_hooks",
    description: str | None = None,
) -> int:
    """Run one operator command; domain errors become one line and an exit code here.

    `settings` replaces the environment's (a Django project's); `prepare` is called on the
    runtime before the command runs.
    """
    try:
        args = build_parser(prog, description).parse_args(argv)
    except SystemExit as exit:
        # argparse exits 2 on a usage error, which here means "invalid task files".
        return OK if exit.code in (0, None) else USAGE
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if settings is None:
        try:
            read_dotenv()
            settings = Settings.from_env()
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return USAGE
    if args.database_url:
        settings = settings.with_(database_url=args.database_url)
    try:
        if getattr(args, "settings_only", False):
            return int(args.handler(settings, args))
        settings.require_database()
        publisher = LazyCeleryPublisher(settings)
        runtime = Runtime.build(
            settings,
            publisher,
            connect_timeout=settings.connect_timeout_seconds,
            # Commands that run batches keep the workers' limits; the rest touch records only.
            timeouts=None if args.command in ("run", "dry-run") else COMMAND_TIMEOUTS,
        )
        try:
            if prepare is not None:
                prepare(runtime)
            return int(args.handler(runtime, args))
        finally:
            runtime.close()
            publisher.close()
    except DataTaskError as error:
        return fail(error)
    except DBAPIError as error:
        return fail(database_error(settings.database_url, error))
    except RedisError as error:
        return fail(unavailable(settings, error))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
