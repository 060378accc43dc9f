"""Queued experiments on a Ray cluster: each one a Ray task in its own checkout, its results
brought back through the git and DVC remotes, so that `dvc exp pull` and `dvc exp show` list it
as a local `dvc queue start` would.

    pip install -e '.[cluster]'                                   # ray, an optional extra
    dvc exp run --queue -n coef-1 -S steer.coefficient=1.0        # queue as for a local run
    git push origin HEAD && dvc push --run-cache                  # the baseline and its outputs
    python -m steerpipe.cluster run --address auto --num-gpus 1   # on the cluster Ray reaches
    dvc exp pull origin coef-1 && dvc exp show                    # on any clone

Each queued experiment is DVC's stash commit (the baseline plus what ``dvc exp run --queue``
changed); it goes to the git remote under ``refs/steerpipe/queue/<name>`` with its baseline. A
task clones the git remote, checks out the baseline, applies the stash (as DVC's own temp-dir
executor does), pulls what the DVC remote has (outputs and run cache, so that unchanged stages
are restored, not re-run), runs ``dvc exp run -n <name>``, pushes the outputs and run cache,
and only then the experiment's git ref: a task that dies before the end leaves nothing on the
remote that ``dvc exp pull`` would find. Ray retries a task whose worker died (killed, out of
memory) up to ``--retries`` times; an experiment whose command fails is reported and not
retried. Experiments whose ref is already on the git remote are skipped, so running the command
again pushes nothing new. docs/pipeline.md, "Sweeps on a Ray cluster", says what must be shared.
"""

from __future__ import annotations

import argparse
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUEUE_REFS = "refs/steerpipe/queue"


@dataclass(frozen=True)
class Experiment:
    """One queued experiment: its name, DVC's stash commit and the commit it starts from."""

    name: str
    stash_rev: str
    baseline_rev: str


class ExperimentFailed(Exception):
    def __init__(self, name: str, step: str, output: str) -> None:
        super().__init__(f"{name}: `{step}` failed:\n{output[-2000:]}")
        self.name = name


def sh(*args: str, cwd: Path | str, name: str = "") -> str:
    """Run a command; its output, or ExperimentFailed with the end of it."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExperimentFailed(name, " ".join(args), proc.stdout + proc.stderr)
    return proc.stdout


def queued(root: Path) -> list[Experiment]:
    """The experiments ``dvc exp run --queue`` queued in the repository at ``root``
    (dvc/repo/experiments/queue/celery.py, ``iter_queued``; DVC names every entry)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        entries = list(repo.experiments.celery_queue.iter_queued())
    return [Experiment(str(e.name), e.stash_rev, e.baseline_rev) for e in entries]


def pushed(git_url: str, cwd: Path) -> set[str]:
    """Names of the experiments on the git remote (DVC's refs/exps/<baseline>/<name>)."""
    refs = sh("git", "ls-remote", git_url, "refs/exps/*", cwd=cwd).split()
    return {ref.rsplit("/", 1)[1] for ref in refs if ref.startswith("refs/exps/")}


def publish(exp: Experiment, git_url: str, cwd: Path) -> None:
    """The stash commit and its baseline on the git remote, where the tasks fetch them."""
    base = f"{QUEUE_REFS}/{exp.name}"
    sh("git", "push", "-q", "-f", git_url, f"{exp.stash_rev}:{base}",
       f"{exp.baseline_rev}:{base}-baseline", cwd=cwd, name=exp.name)  # fmt: skip


def run_experiment(
    exp: Experiment, git_url: str, dvc_url: str, *, before_ref: Callable[[], None] | None = None
) -> dict[str, Any]:
    """One experiment in a new checkout, pushed to the remotes; what the task returns (its
    name, seconds, and the stages restored from the run cache). ``before_ref`` runs between
    the data's push and the ref's (the tests die there)."""
    start = time.monotonic()
    if exp.name in pushed(git_url, Path(tempfile.gettempdir())):  # a retry after the ref went out
        return {"name": exp.name, "seconds": 0.0}
    print(f"start   {exp.name} on {socket.gethostname()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"steerpipe-{exp.name}-"))
    try:
        targets = checkout(exp, git_url, work)
        sh("dvc", "remote", "add", "--local", "-f", "-d", "cluster", dvc_url, cwd=work)
        sh("dvc", "pull", "-q", "--run-cache", "--allow-missing", cwd=work, name=exp.name)
        # --pull: a stage found in the run cache gets its outputs from the DVC remote, so a
        # retry after a death takes what the dead task pushed instead of running it again
        out = sh("dvc", "exp", "run", "--pull", "-n", exp.name, *targets, cwd=work, name=exp.name)
        sh("dvc", "push", "-q", "--run-cache", cwd=work, name=exp.name)
        if before_ref is not None:
            before_ref()
        sh("dvc", "exp", "push", "-q", "--no-cache", "origin", exp.name, cwd=work, name=exp.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    restored = re.findall(r"Stage '([^']+)' is cached", out)
    return {"name": exp.name, "seconds": round(time.monotonic() - start, 1), "restored": restored}


def checkout(exp: Experiment, git_url: str, work: Path) -> list[str]:
    """The baseline with the stash's changes left uncommitted, in a new clone at ``work`` (dvc's
    TempDirExecutor merges the stash commit the same way: executor/temp.py, ``init_git``); the
    targets that ``dvc exp run --queue`` was given, from the stash's packed arguments (its other
    options, such as ``--downstream``, are not carried over)."""
    sh("git", "clone", "-q", "--no-checkout", git_url, str(work), cwd=work.parent, name=exp.name)
    sh("git", "fetch", "-q", "origin", f"{QUEUE_REFS}/{exp.name}",
       f"{QUEUE_REFS}/{exp.name}-baseline", cwd=work, name=exp.name)  # fmt: skip
    sh("git", "checkout", "-q", exp.baseline_rev, cwd=work, name=exp.name)
    sh("git", "merge", "-q", "--squash", exp.stash_rev, cwd=work, name=exp.name)
    sh("git", "reset", "-q", cwd=work, name=exp.name)
    packed = work / ".dvc/tmp/repro.dat"  # executor/base.py, pack_repro_args
    if not packed.exists():
        return []
    with packed.open("rb") as f:
        data = pickle.load(f)  # noqa: S301 (written by dvc exp run --queue in this repository)
    packed.unlink()
    targets = data["kwargs"].get("targets") or (data["args"][0] if data["args"] else None)
    return [targets] if isinstance(targets, str) else [str(t) for t in targets or []]


def run(
    experiments: list[Experiment],
    *,
    git_url: str,
    dvc_url: str,
    cwd: Path,
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    memory_gb: float | None = None,
    retries: int = 2,
    task: Callable[[Experiment, str, str], dict[str, Any]] = run_experiment,
) -> dict[str, list[str]]:
    """Every experiment not yet on the git remote as a Ray task; one line per experiment as it
    finishes or fails, then a summary. Returns the names done, skipped and failed."""
    try:
        import ray
    except ImportError:
        raise SystemExit("ray is not installed: pip install -e '.[cluster]'") from None

    done_before = pushed(git_url, cwd)
    skipped = [e.name for e in experiments if e.name in done_before]
    todo = [e for e in experiments if e.name not in done_before]
    for name in skipped:
        print(f"skip    {name}: already on {git_url}", flush=True)
    for exp in todo:
        publish(exp, git_url, cwd)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True)
    remote = ray.remote(task).options(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        memory=None if memory_gb is None else int(memory_gb * 2**30),
        max_retries=retries,  # a dead worker's task runs again; a failed command does not
        retry_exceptions=False,
    )
    pending = {remote.remote(e, git_url, dvc_url): e.name for e in todo}
    done: list[str] = []
    failed: list[str] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
            cached = result.get("restored")
            print(
                f"done    {name} in {result['seconds']} s"
                + (f" (from the run cache: {', '.join(cached)})" if cached else ""),
                flush=True,
            )
            done.append(name)
        except Exception as e:  # noqa: BLE001 (any task error is reported by the experiment's name)
            print(f"failed  {name}: {str(e).strip().splitlines()[-1][:300]}", flush=True)
            failed.append(name)
    print(
        f"{len(done)} done, {len(skipped)} already on the remote, {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return {"done": done, "skipped": skipped, "failed": failed}


def remote_url(cwd: Path, kind: str, name: str | None) -> str:
    """The URL of a git remote (``origin`` by default) or a DVC remote (the default one)."""
    if kind == "git":
        return sh("git", "remote", "get-url", name or "origin", cwd=cwd).strip()
    if name is None:  # `dvc remote default` fails when there is none
        default = subprocess.run(
            ["dvc", "remote", "default"], cwd=cwd, capture_output=True, text=True
        )
        name = default.stdout.strip() if default.returncode == 0 else ""
    if not name:
        raise SystemExit("no DVC remote: add one (dvc remote add -d NAME URL) or pass --dvc-remote")
    for line in sh("dvc", "remote", "list", cwd=cwd).splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return parts[1]
    raise SystemExit(f"no DVC remote named {name!r} (dvc remote list)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m steerpipe.cluster", description=__doc__.splitlines()[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the queued experiments as Ray tasks")
    r.add_argument(
        "--address", default=None, help="Ray's address (auto, ray://host:10001); none: a local Ray"
    )
    r.add_argument("--git-remote", default=None, help="default origin")
    r.add_argument("--dvc-remote", default=None, help="default: the DVC default remote")
    r.add_argument("--num-cpus", type=float, default=1)
    r.add_argument("--num-gpus", type=float, default=0)
    r.add_argument("--memory-gb", type=float, default=None)
    r.add_argument("--retries", type=int, default=2, help="runs of a task whose worker died")
    args = ap.parse_args(argv)
    cwd = Path.cwd()
    experiments = queued(cwd)
    if not experiments:
        raise SystemExit("no queued experiments: queue them with dvc exp run --queue")
    result = run(
        experiments,
        git_url=remote_url(cwd, "git", args.git_remote),
        dvc_url=remote_url(cwd, "dvc", args.dvc_remote),
        cwd=cwd,
        address=args.address,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        memory_gb=args.memory_gb,
        retries=args.retries,
    )
    for name in result["done"] + result["skipped"]:
        subprocess.run(["dvc", "queue", "remove", name], cwd=cwd, capture_output=True)
    sys.exit(1 if result["failed"] else 0)


if __name__ == "__main__":
    main()
