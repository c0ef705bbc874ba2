"""Every error the runner raises on purpose: one base class, context as attributes."""

from __future__ import annotations


class DataTaskError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidTaskFile(DataTaskError):
    """A file in the task directory cannot be used as a data task."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"invalid task file {path}: {reason}")


class UnknownVersion(DataTaskError):
    """A version names no data task (no file, or no record)."""

    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(f"unknown data task version {version!r}")


class InvalidTransition(DataTaskError):
    """A status change that the state machine does not allow."""

    def __init__(self, version: str, from_: str, to: str, command: str | None = None) -> None:
        self.version = version
        self.from_ = from_
        self.to = to
        self.command = command
        if command:
            message = f"data task {version}: cannot {command} it while it is {from_}"
        else:
            message = f"data task {version}: cannot go from {from_} to {to}"
        super().__init__(message)


class DependencyError(DataTaskError):
    """A dependency names an unknown version or forms a cycle."""


class ServiceUnavailable(DataTaskError):
    """The database or Redis cannot be reached."""

    def __init__(self, service: str, url: str, reason: str) -> None:
        self.service = service
        self.url = url
        self.reason = reason
        super().__init__(f"{service} unreachable at {url}: {reason}")


class MissingDatabase(DataTaskError):
    """No database was named: nothing may guess one (a guess would create an empty file)."""

    def __init__(self) -> None:
        super().__init__(
            "no database: set DATABASE_URL (in the environment, or in a .env file in this "
            "directory; the operator commands also take --database-url)"
        )


class DataTaskNotDone(DataTaskError):
    """A migration needs a data task that has not succeeded (or been skipped) yet."""

    def __init__(self, version: str, name: str | None, status: str | None) -> None:
        self.version = version
        self.name = name
        self.status = status
        if status is None:
            message = f"data task {version} is not recorded yet: deploy and let it run first"
        else:
            message = (
                f"data task {version} {name} is {status}: this migration needs it succeeded "
                "(see `python -m deploy_hooks status`)"
            )
        super().__init__(message)


class PassRunning(DataTaskError):
    """Another deploy hook or sweep held the hook lock for the whole wait: it does the work."""

    def __init__(self, lock: str) -> None:
        self.lock = lock
        super().__init__(
            "another pass is running; it will enqueue what may run "
            "(and the next sweep or deploy hook what it leaves)"
        )


class DatabaseFailed(ServiceUnavailable):
    """The records database answered with an error: a timeout, a permission, a wrong table."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__("database", url, reason)

    def __str__(self) -> str:
        return f"database error at {self.url}: {self.reason}"


class InvalidUrl(DataTaskError):
    """DATABASE_URL or REDIS_URL cannot be parsed (an unencoded character in the password)."""

    def __init__(self, variable: str, redacted_url: str) -> None:
        self.variable = variable
        super().__init__(
            f"{variable} {redacted_url} cannot be parsed: percent-encode the special characters "
            "of its password (/ as %2F, @ as %40, : as %3A, # as %23)"
        )


class InvalidMessage(DataTaskError):
    """A chunk job message that is not what the runner publishes."""


class CheckFailed(DataTaskError):
    """A data task's verification check did not pass."""
