"""`dvc repro` with two stages side by side, each on its share of the cores: the default
pipeline in less time on a machine of few cores, with the same outputs.

    python -m steerpipe.repro [TARGET ...] [--jobs 2] [--force]   # scripts/pipeline.sh runs it

Why: a stage gains only about 1.7x from a second core (its start-up, tokenizing and sampling
run on one; the matrix products of few rows split poorly), so two stages with a thread each
do more in the same time. On the 2-core machine `bash scripts/pipeline.sh` took 746 s with
it, against 866 and 875 s with `dvc repro` (docs/pipeline.md, "Wall time").

How: each stage is `dvc repro --single-item STAGE`, started once every stage it depends on
has finished, so DVC still decides whether it runs (unchanged, it is skipped) and records it
in dvc.lock and the run cache. DVC releases its repository lock while a stage's command
runs, so two commands run side by side; `--wait-for-lock` waits out the other's bookkeeping.
Among the stages ready, the one with the longest chain of stages after it goes first (a
stage that loads a model counting 10, any other 1), then dvc.yaml's order. The bits are
`dvc repro`'s: stages compute in MKL's strict mode (``config.py``), where a product's bits do
not depend on the thread count.

Each stage's output goes to ``.dvc/tmp/repro/<stage>.log``; the terminal gets a line when a
stage starts and ends, every minute the ones running, and a failed stage's last lines. A
failure stops the run: no new stage starts, the running ones finish, the exit code is 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Set
from dataclasses import dataclass
from functools import cache
from pathlib import Path

LOGS = Path(".dvc/tmp/repro")


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    start: float


# a stage that loads a model (its deps include this module) takes minutes, the others seconds
MODEL_CODE = "src/steerpipe/lm/models.py"


def stage_graph(root: Path, targets: list[str]) -> tuple[dict[str, set[str]], set[str]]:
    """Each stage to run (``targets`` and what they depend on; all: every stage), in dvc.yaml's
    order, with the stages it depends on; and the stages among them that load a model."""
    from dvc.repo import Repo

    here = os.getcwd()
    os.chdir(root)  # a stage's address (``judge@sweep``, ``sub/dvc.yaml:x``) is the root's
    try:
        with Repo(".") as repo:
            graph = repo.index.graph  # an edge goes from a stage to one it depends on
            upstream = {
                stage.addressing: {dep.addressing for dep in graph.successors(stage) if dep.cmd}
                for stage in repo.index.stages
                if stage.cmd
            }
            heavy = {
                stage.addressing
                for stage in repo.index.stages
                if any(str(dep.def_path) == MODEL_CODE for dep in stage.deps)
            }
    finally:
        os.chdir(here)
    unknown = [t for t in targets if t not in upstream]
    if unknown:
        raise SystemExit(f"no stage named {', '.join(unknown)} in dvc.yaml")
    if not targets:
        return upstream, heavy
    wanted: set[str] = set()
    todo = list(targets)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(upstream[name])
    return {name: deps for name, deps in upstream.items() if name in wanted}, heavy & wanted


def order(upstream: dict[str, set[str]], heavy: Set[str] = frozenset()) -> dict[str, int]:
    """Each stage's rank among ready ones (0 first): the longest chain of stages after it,
    a stage of ``heavy`` counting 10 and any other 1, then dvc.yaml's order (``upstream``'s).
    Simulated on the seconds of one default run on the 2-core machine: 716 s of stages,
    against 713 s ordered by those seconds themselves and 737 s with every stage counting 1
    (docs/pipeline.md, "Wall time")."""
    after = {name: {n for n, deps in upstream.items() if name in deps} for name in upstream}

    @cache
    def chain(name: str) -> int:
        weight = 10 if name in heavy else 1
        return weight + max((chain(n) for n in after[name]), default=0)

    position = {name: i for i, name in enumerate(upstream)}
    ranked = sorted(upstream, key=lambda n: (-chain(n), position[n]))
    return {name: i for i, name in enumerate(ranked)}


def run_stages(
    upstream: dict[str, set[str]],
    heavy: Set[str] = frozenset(),
    *,
    jobs: int = 2,
    force: bool = False,
    root: Path = Path("."),
    tick: float = 0.2,
) -> list[str]:
    """Runs the stages of ``upstream`` (``stage_graph``'s, with ``heavy``), at most ``jobs`` at
    once; the stages that failed (none: all ran or were unchanged)."""
    rank = order(upstream, heavy)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    (root / LOGS).mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    failed: list[str] = []
    running: dict[str, Running] = {}
    begin = last_report = time.monotonic()
    try:
        while running or (not failed and len(done) < len(upstream)):
            ready = [
                n for n in upstream if n not in done and n not in running and upstream[n] <= done
            ]
            for name in sorted(ready, key=rank.__getitem__)[: 0 if failed else jobs - len(running)]:
                cmd = ["dvc", "--wait-for-lock", "repro", "--single-item", *(["-f"] * force), name]
                with log_path(name, root).open("wb") as log:
                    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=log)
                running[name] = Running(proc, time.monotonic())
                say(begin, f"start   {name}")
            time.sleep(tick)
            for name, r in list(running.items()):
                if r.process.poll() is None:
                    continue
                del running[name]
                seconds = time.monotonic() - r.start
                text = log_path(name, root).read_text(errors="replace")
                if r.process.returncode != 0:
                    failed.append(name)
                    tail = "\n".join(text.strip().splitlines()[-20:])
                    say(begin, f"failed  {name} after {seconds:.1f} s:\n{tail}")
                elif "didn't change, skipping" in text:
                    done.add(name)
                    say(begin, f"unchanged {name}")
                else:
                    done.add(name)
                    say(begin, f"ran     {name} in {seconds:.1f} s")
            if running and time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                now = ", ".join(f"{n} ({last_report - r.start:.0f} s)" for n, r in running.items())
                say(begin, f"running {now}")
    finally:
        for r in running.values():  # Ctrl-C: the terminal's signal reached them too
            r.process.wait()
    return failed


def log_path(stage: str, root: Path = Path(".")) -> Path:
    """Where a stage's output goes (``judge@sweep``: ``judge-sweep.log``)."""
    return root / LOGS / f"{stage.replace('@', '-')}.log"


def say(begin: float, text: str) -> None:
    print(f"[{time.monotonic() - begin:6.0f} s] {text}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m steerpipe.repro", description=__doc__.split("\n")[0]
    )
    ap.add_argument("targets", nargs="*", help="stages to bring up to date (default: all)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="stages at once (default 2)")
    ap.add_argument("-f", "--force", action="store_true", help="run them even if unchanged")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    upstream, heavy = stage_graph(Path("."), args.targets)
    failed = run_stages(upstream, heavy, jobs=args.jobs, force=args.force)
    if failed:
        logs = ", ".join(str(log_path(n)) for n in failed)
        raise SystemExit(f"failed: {', '.join(failed)} (logs: {logs})")
    print(f"{len(upstream)} stages up to date", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
