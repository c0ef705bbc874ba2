"""`python -m bench.table`: the README's performance table, generated from bench/results.json.

Only the text between the two marker comments in the README is rewritten. `make bench` and
`make bench-scale` run it after measuring; nothing in the table is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.markers import MarkerError, replace_between

REPO = Path(__file__).resolve().parent.parent
START = "<!-- performance:start -->"
END = "<!-- performance:end -->"
HEADER = "| benchmark | median | target | | absolute (medians) |\n| --- | ---: | ---: | --- | --- |"


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def duration(seconds: float) -> str:
    """`6 min 27 s`."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def target_text(figure: dict[str, Any]) -> str:
    """`>= 0.95`, `<= 1.5`, or a dash."""
    if figure["target"] is None:
        return "-"
    return f"{'>=' if figure['direction'] == 'min' else '<='} {figure['target']:g}"


def verdict(figure: dict[str, Any]) -> str:
    """met / not met / -."""
    met = figure.get("met")
    return "-" if met is None else ("met" if met else "**not met**")


def about(run: dict[str, Any]) -> str:
    """The line saying which run measured the figures below it."""
    machine, config = run["machine"], run["config"]
    if run["scenarios"] == ["size"]:
        method = f"each figure compares the medians of {config['size_repetitions']} run(s) a size"
    else:
        method = (
            f"each ratio is the median of {config['repetitions']} interleaved rounds after "
            f"{config['warmup']} discarded warm-up round(s)"
        )
    return (
        f"Generated from `{run['command']}` of {str(run['started'])[:10]}: "
        f"{duration(run['seconds'])} on {machine['cpus']} cores ({machine['cpu_model']}, "
        f"{machine['memory_gib']:g} GiB, Python {machine['python']}); {method}."
    )


def render(document: dict[str, Any]) -> str:
    """One line about each run and its figures' table, as markdown."""
    parts: list[str] = []
    for run_id, run in sorted(document["runs"].items()):
        rows = [about(run), "", HEADER]
        for figure in document["figures"]:
            if figure["run"] != run_id:
                continue
            rows.append(
                f"| {cell(figure['label'])} | {figure['value']:.2f} {figure['unit']} "
                f"| {target_text(figure)} | {verdict(figure)} | {cell(figure['absolute'])} |"
            )
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md", help="rewritten here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the README's table from the results; exit 2 with one line on bad input."""
    args = parse(argv)
    try:
        try:
            document = json.loads(args.results.read_text())
            readme = args.readme.read_text()
        except OSError as error:
            raise MarkerError(f"cannot read {error.filename}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise MarkerError(f"{args.results}: not JSON ({error.msg})") from None
        args.readme.write_text(replace_between(readme, START, END, render(document)))
    except MarkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote the performance table of {args.results} into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
