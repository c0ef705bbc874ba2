"""`python -m deploy_hooks.flower`: start Flower, and refuse to without authentication.

FLOWER_BASIC_AUTH=user:password[,user:password...] is required (Flower reads it from the
environment, so the password never shows in the process list). FLOWER_UNAUTHENTICATED=true
starts it open, for a private network only. Extra arguments go to `celery flower`. Its
/metrics and /healthcheck ask for the same authentication as the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from deploy_hooks.exit_codes import USAGE


def refusal(environ: Mapping[str, str]) -> str | None:
    """Why Flower must not start with this environment, or None when it may."""
    auth = environ.get("FLOWER_BASIC_AUTH", "").strip()
    if not auth:
        if environ.get("FLOWER_UNAUTHENTICATED", "").strip().lower() == "true":
            return None
        return (
            "FLOWER_BASIC_AUTH=user:password is not set: refusing to start Flower without "
            "authentication (set FLOWER_UNAUTHENTICATED=true to run it open on a private network)"
        )
    for pair in auth.split(","):
        user, _, password = pair.partition(":")
        if not user.strip() or not password:
            return "FLOWER_BASIC_AUTH must be user:password pairs separated by commas"
    return None


def protect_monitoring() -> None:
    """Make Flower's /metrics and /healthcheck ask for the same authentication as its pages.

    Flower serves both to anyone: the metrics name every task and worker. A platform health
    check sends the same credentials as a person, or probes the port instead.
    """
    import tornado.web
    from flower.views import monitor

    for handler in (monitor.Metrics, monitor.Healthcheck):
        if not getattr(handler.get, "__wrapped__", None):
            handler.get = tornado.web.authenticated(handler.get)


def main(argv: Sequence[str] | None = None) -> int:
    """Check the environment, then run `celery -A <app> flower` in this process."""
    reason = refusal(os.environ)
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return USAGE
    extra = list(sys.argv[1:] if argv is None else argv)
    if not any(argument.startswith("--port") for argument in extra):
        # Platforms such as Heroku say which port to listen on in PORT.
        extra.insert(0, f"--port={os.environ.get('PORT', '5555')}")
    protect_monitoring()
    from celery.bin.celery import main as celery_main

    # The team's own app when DATA_TASKS_CELERY_APP names one, else the standalone app.
    app = os.environ.get("DATA_TASKS_CELERY_APP", "").strip() or "worker"
    sys.argv = ["celery", "-A", app, "flower", *extra]
    return int(celery_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
