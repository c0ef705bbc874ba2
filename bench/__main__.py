"""`python -m bench`: run the benchmarks, print the table, merge results.json, draw the plot.

`make bench` runs every benchmark but the size one; `make bench-scale` runs `--only size`. Both
then rewrite the README's table from results.json (`python -m bench.table`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import adaptive, hook, keyset, memory, results, rows, scale_out, size, small_tasks
from bench.config import FULL, QUICK, Config
from bench.figures import Figure
from bench.report import machine, plot, table
from bench.services import Services

HERE = Path(__file__).resolve().parent
# `size` (20,000,000 rows, many minutes) runs only when asked for: `make bench-scale`.
SCENARIOS = ("keyset", "rows", "hook", "small", "memory", "adaptive", "scale", "size")
DEFAULT = SCENARIOS[:-1]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--repetitions", type=int, help="repetitions of each timed comparison")
    parser.add_argument("--keyset-rows", type=int, help="rows of the keyset backfill")
    parser.add_argument("--rows-rows", type=int, help="rows of the row iteration")
    parser.add_argument("--small-tasks", type=int, help="one-shot data tasks in the many-small run")
    parser.add_argument("--hook-files", type=int, help="task files in the deploy hook's directory")
    parser.add_argument(
        "--size-rows", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="the size benchmark's"
    )
    parser.add_argument(
        "--only", default=",".join(DEFAULT), help=f"comma-separated subset of {SCENARIOS}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where results.json/png go (default bench/; --quick writes nowhere unless given)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> Config:
    """The preset, with any size given on the command line."""
    config = QUICK if args.quick else FULL
    changes = {
        name: getattr(args, name)
        for name in ("repetitions", "keyset_rows", "rows_rows", "small_tasks", "hook_files")
        if getattr(args, name) is not None
    }
    if args.size_rows is not None:
        changes["size_rows"] = tuple(args.size_rows)
    return config.with_(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks on fresh services; exit 0 even when a target is missed.

    Exit 1 when a benchmark could not run at all.
    """
    args = parse(argv)
    config = configure(args)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; choose from {SCENARIOS}", file=sys.stderr)
        return 2
    figures: list[Figure] = []
    failed: list[str] = []
    began = time.monotonic()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as work,
        Services(Path(work), cache_bytecode=not args.quick) as services,
    ):
        steps: dict[str, Callable[[], list[Figure]]] = {
            "keyset": lambda: keyset.run(services, config),
            "rows": lambda: rows.run(services, config),
            "hook": lambda: hook.run(services, config),
            "small": lambda: small_tasks.run(services, config),
            "memory": lambda: memory.run(services, config, known_peaks(figures, config)),
            "adaptive": lambda: adaptive.run(services, config),
            "scale": lambda: scale_out.run(services, config),
            "size": lambda: size.run(services, config),
        }
        for name in SCENARIOS:
            if name in chosen:
                step_began = time.monotonic()
                print(f"running {name} ...", file=sys.stderr, flush=True)
                try:
                    found = steps[name]()
                except Exception as error:
                    # One broken benchmark must not throw away the minutes the others took.
                    failed.append(name)
                    print(f"  {name} failed: {error!r}", file=sys.stderr)
                    continue
                figures += found
                print(table(found), file=sys.stderr)
                print(f"  {name} took {time.monotonic() - step_began:.0f} s", file=sys.stderr)
    seconds = time.monotonic() - began
    print(table(figures))
    print(f"\n{len(figures)} figures in {seconds:.0f} s")
    out = args.out if args.out is not None or args.quick else HERE
    if out is not None:
        run = {
            "started": started,
            "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "seconds": round(seconds),
            "scenarios": chosen,
            "machine": machine(),
            "config": asdict(config),
        }
        out.mkdir(parents=True, exist_ok=True)
        document = results.write(out / "results.json", run, figures)
        if not args.no_plot:
            plot(out / "results.png", results.figures_of(document))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def known_peaks(figures: Sequence[Figure], config: Config) -> dict[int, list[int]]:
    """Peak RSS samples the keyset benchmark already took at its size."""
    for figure in figures:
        if figure.key == "keyset_fixed_vs_loop":
            return {config.keyset_rows: list(figure.detail["peak_rss_bytes"])}
    return {}


if __name__ == "__main__":
    sys.exit(main())
