"""`python -m bench.publish_noops COUNT`: publish empty jobs from a process of its own.

The baseline of the many-small-tasks benchmark, run as the deploy hook runs: a fresh Python
that builds the app, connects to the broker and publishes, so both sides pay for the same.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bench.worker_app import NOOP_JOB
from data_tasks.settings import Settings
from worker.app import make_app


def main(argv: Sequence[str] | None = None) -> int:
    """Publish COUNT empty jobs on the settings' queue."""
    count = int((argv if argv is not None else sys.argv[1:])[0])
    settings = Settings.from_env()
    app = make_app(settings)
    for _ in range(count):
        app.send_task(NOOP_JOB, queue=settings.queue)
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
