"""`python -m deploy_hooks.enqueue`: enqueue every data task that may run, and return at once.

Also the sweep: run it from cron or celery beat to re-publish lost jobs and reclaim runs
whose worker died.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from data_tasks.database import database_error
from data_tasks.errors import DataTaskError, PassRunning
from data_tasks.settings import Settings, read_dotenv
from deploy_hooks.exit_codes import OK, fail
from deploy_hooks.idle import nothing_to_do

if TYPE_CHECKING:
    from data_tasks.runtime import Prepare
    from data_tasks.scheduler import EnqueueReport

NOTHING_NEW = "nothing new to enqueue"


def format_report(report: EnqueueReport) -> list[str]:
    """The lines the hook prints: what it enqueued, and what it left and why."""
    lines = [
        f"enqueued {e.version} {e.name} (epoch {e.epoch}, {e.reason})" for e in report.enqueued
    ]
    for version, deps in sorted(report.waiting.items()):
        lines.append(f"waiting  {version} on {', '.join(deps)}")
    lines += [f"running  {version} (already in flight)" for version in report.in_flight]
    lines += [
        f"failed   {version} (fix its file and redeploy, or `retry`)" for version in report.failed
    ]
    lines += [
        f"missing  {version}: recorded but its file is gone" for version in report.missing_files
    ]
    if not report.enqueued:
        lines.append(NOTHING_NEW)
    return lines


def full_pass(settings: Settings, prepare: Prepare | None = None) -> list[str]:
    """The scheduler's pass: records, dependencies, claims, publishes; the report's lines."""
    # Imported here: a deploy with nothing new (see deploy_hooks.idle) never needs them.
    from data_tasks.runtime import COMMAND_TIMEOUTS, Runtime
    from data_tasks.scheduler import enqueue
    from deploy_hooks.publishing import LazyCeleryPublisher

    publisher = LazyCeleryPublisher(settings)
    runtime = Runtime.build(
        settings,
        publisher,
        connect_timeout=settings.connect_timeout_seconds,
        timeouts=COMMAND_TIMEOUTS,
    )
    try:
        if prepare is not None:
            prepare(runtime)
        return format_report(enqueue(runtime))
    finally:
        runtime.close()
        publisher.close()


def main(
    argv: Sequence[str] | None = None,
    settings: Settings | None = None,
    prepare: Prepare | None = None,
    prog: str = "python -m deploy_hooks.enqueue",
) -> int:
    """Run the deploy hook; the exit code says what happened (see the README).

    `settings` replaces the environment's (a Django project's); `prepare` is called on the
    runtime before the pass.
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--quiet", action="store_true", help="print errors only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    started = time.monotonic()
    if settings is None:
        try:
            read_dotenv()
            settings = Settings.from_env()
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    try:
        settings = settings.require_database()
        lines = [NOTHING_NEW] if nothing_to_do(settings) else full_pass(settings, prepare)
    except PassRunning as running:
        # Not a failure: the pass holding the lock enqueues what may run.
        print(str(running))
        return OK
    except DataTaskError as error:
        return fail(error)
    except DBAPIError as error:
        # The database answered, but refused: a lock or statement timeout, a missing
        # permission, a task_records table of another shape.
        return fail(database_error(settings.database_url, error))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        for line in lines:
            print(line)
        print(f"deploy hook done in {time.monotonic() - started:.2f}s")
    return OK


if __name__ == "__main__":
    # The objects the imports above made live until the process exits. Frozen, they are out
    # of the cyclic collector's sight: its full collections (during psycopg's import, and at
    # exit; about 20 ms each) walk only what the pass itself makes.
    gc.freeze()
    sys.exit(main())
