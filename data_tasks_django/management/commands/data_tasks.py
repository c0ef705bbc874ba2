"""`python manage.py data_tasks enqueue|status|show|retry|pause|...`, with their exit codes."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from data_tasks_django.commands import run


class Command(BaseCommand):
    """The deploy hook and every operator command of `python -m deploy_hooks`."""

    help = (
        "Data tasks: `enqueue` is the deploy hook; status, show, history, run, retry, pause, "
        "resume, cancel, skip, rerun, wait, dry-run, new and flower operate them "
        "(`manage.py data_tasks status --help`)."
    )
    # The commands touch their own tables only; Django's system checks add nothing here.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """Everything after `data_tasks` goes to the data tasks' own command line."""
        parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the command; a non-zero exit code leaves the process with it."""
        code = run(options["arguments"] or ["--help"])
        if code:
            raise SystemExit(code)
