"""`manage.py data_tasks COMMAND`: every `python -m deploy_hooks` command, on Django's settings.

`enqueue` is the deploy hook (`python -m deploy_hooks.enqueue`), `flower` starts Flower on the
project's Celery app; the rest are the operator commands. The exit codes are theirs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from django.core.exceptions import ImproperlyConfigured

from data_tasks_django import conf
from data_tasks_django.connection import prepare
from deploy_hooks import cli, enqueue, flower
from deploy_hooks.exit_codes import USAGE

PROG = "manage.py data_tasks"


def run(argv: Sequence[str]) -> int:
    """Run one command with the project's settings; returns its exit code."""
    arguments = list(argv)
    if arguments[:1] == ["flower"]:
        # Flower's wrapper runs `celery -A <app> flower`: the project's own app.
        os.environ["DATA_TASKS_CELERY_APP"] = conf.celery_app()
        return flower.main(arguments[1:])
    try:
        settings = conf.build_settings()
    except ImproperlyConfigured as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
    if arguments[:1] == ["enqueue"]:
        return enqueue.main(arguments[1:], settings, prepare, prog=f"{PROG} enqueue")
    return cli.main(arguments, settings, prepare, prog=PROG, description=__doc__)
