"""Generated text in the README: the part between a start and an end marker comment."""

from __future__ import annotations


class MarkerError(Exception):
    """Input a README generator cannot use; the message is the one line to print."""


def replace_between(readme: str, start: str, end: str, body: str) -> str:
    """The README with only the text between the markers replaced by `body`."""
    once = readme.count(start) == 1 and readme.count(end) == 1
    if not once or readme.index(start) > readme.index(end):
        raise MarkerError(f"the README needs one {start} line followed by one {end} line")
    head, rest = readme.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}{end}{tail}"


def between(readme: str, start: str, end: str) -> str:
    """The text between the markers (what `replace_between` put there)."""
    return readme.split(start, 1)[1].split(end, 1)[0].removeprefix("\n")
