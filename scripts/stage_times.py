"""Wall time of every stage of a pipeline run, as a markdown table (issue 29: measured by a
command, not by hand).

    bash scripts/pipeline.sh 2>&1 | python3 scripts/stage_times.py [--out table.md]

Reads the run's output line by line, passes it through, stamps each line as it arrives and, at
the end, prints the set-up (before DVC's first ``Running stage``), each stage's seconds (from
its ``Running stage`` line to the next stage's, so a stage's start-up, imports and model
loading count as its own), the stages DVC skipped and the total. From ``steerpipe.repro``'s
output (stages side by side) each stage's seconds are the ones it printed, and the stages
overlap: their sum is more than the total. Only the standard library:
the pipe starts before ``scripts/setup.sh`` has made the ``.venv``. ``--stamped LOG`` reads a
log whose lines already start with a Unix time (``while read l; do echo "$(date +%s) $l"``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

RUNNING = re.compile(r"Running stage '([^']+)'")
SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")
# steerpipe.repro's lines (stages side by side): each stage's own seconds, as it measured them
STARTED = re.compile(r"^\[ *\d+ s\] start +(\S+)$")
RAN = re.compile(r"^\[ *\d+ s\] ran +(\S+) in ([\d.]+) s$")
UNCHANGED = re.compile(r"^\[ *\d+ s\] unchanged (\S+)$")


@dataclass(frozen=True)
class Timing:
    setup: int  # seconds before the first stage (installing, DVC's start)
    stages: list[tuple[str, int]]  # (stage, seconds), in the order run
    skipped: list[str]
    total: int


def stamped(lines: Iterable[str]) -> Iterator[tuple[float, str]]:
    """(arrival time, line) for each line, passed through to stdout as it comes."""
    for line in lines:
        sys.stdout.write(line)
        sys.stdout.flush()
        yield time.time(), line.rstrip("\n")


def from_log(text: str) -> list[tuple[float, str]]:
    """The (time, line) pairs of a log whose lines start with a Unix time."""
    out = []
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        try:
            out.append((float(head), rest))
        except ValueError:
            continue  # a line the stamping loop split (a carriage return), not a new one
    return out


def stage_seconds(lines: list[tuple[float, str]]) -> Timing:
    """Set-up, per stage (in the order run) and total seconds, and the stages skipped."""
    if not lines:
        raise ValueError("no output to time")
    start, end = lines[0][0], lines[-1][0]
    began = [t for t, text in lines if STARTED.match(text)]
    if began:  # steerpipe.repro's run: stages overlap, so each gives its own seconds
        ran = [(m.group(1), round(float(m.group(2)))) for _, t in lines if (m := RAN.match(t))]
        unchanged = [m.group(1) for _, text in lines if (m := UNCHANGED.match(text))]
        return Timing(round(began[0] - start), ran, unchanged, round(end - start))
    starts = [(t, m.group(1)) for t, text in lines if (m := RUNNING.search(text))]
    skipped = [m.group(1) for _, text in lines if (m := SKIPPED.search(text))]
    bounds = [t for t, _ in starts[1:]] + [end]
    stages = [(name, round(b - t)) for (t, name), b in zip(starts, bounds, strict=True)]
    setup = round((starts[0][0] if starts else end) - start)
    return Timing(setup=setup, stages=stages, skipped=skipped, total=round(end - start))


def markdown(timing: Timing) -> str:
    lines = ["| stage | seconds |", "|---|---|"]
    lines.append(f"| set-up (before the first stage) | {timing.setup} |")
    lines += [f"| `{name}` | {seconds} |" for name, seconds in timing.stages]
    if timing.skipped:
        lines.append(f"| skipped (unchanged) | {', '.join(f'`{s}`' for s in timing.skipped)} |")
    total = timing.total
    lines.append(f"| total | {total} ({total // 60} min {total % 60} s) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 scripts/stage_times.py")
    parser.add_argument("--stamped", type=Path, help="a log with a Unix time on every line")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    lines = from_log(args.stamped.read_text()) if args.stamped else list(stamped(sys.stdin))
    table = markdown(stage_seconds(lines))
    print("\n" + table, end="")
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
