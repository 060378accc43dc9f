"""Which worker ran each test of ``pytest -n 2``, when, and for how long: how the suite's
order and scheduling spend the two cores (docs/testing.md, "How the suite runs in two workers").

    WORKER_TIMES=/tmp/times.jsonl PYTHONPATH=benchmarks \
        python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder -p worker_times
    python benchmarks/worker_times.py /tmp/times.jsonl

As a pytest plugin (``-p worker_times``), each worker appends one line per test to the file
that $WORKER_TIMES names; as a script, it prints each worker's tests, busy seconds and end, and
the tests that took more than 15 s, in the order they started. Times are ``time.monotonic()``
(one clock for all the workers of a machine), so that a test that replaces ``time.time``
(tests/test_stage_times.py does) does not break the plugin.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[START] = time.monotonic()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    path = os.environ.get("WORKER_TIMES")
    if path:
        line = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "test": item.nodeid,
                "start": item.stash[START], "end": time.monotonic()}  # fmt: skip
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


START = pytest.StashKey[float]()


def summary(rows: list[dict[str, Any]]) -> str:
    t0 = min(r["start"] for r in rows)
    lines = []
    for worker in sorted({r["worker"] for r in rows}):
        mine = [r for r in rows if r["worker"] == worker]
        busy = sum(r["end"] - r["start"] for r in mine)
        end = max(r["end"] for r in mine) - t0
        lines.append(f"{worker}: {len(mine)} tests, busy {busy:.0f} s, last ends at {end:.0f} s")
    for r in sorted(rows, key=lambda r: r["start"]):
        if r["end"] - r["start"] > 15:
            took = r["end"] - r["start"]
            lines.append(f"{r['worker']} at {r['start'] - t0:4.0f} s: {took:5.1f} s {r['test']}")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(summary([json.loads(line) for line in f if line.strip()]))
