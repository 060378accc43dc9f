"""cluster: queued experiments of the tiny pipeline as Ray tasks on a local Ray instance, with a
bare git remote and a local DVC remote in a temporary folder. A fresh clone's ``dvc exp show``
lists them with the metrics of the same experiments run locally; a task killed between the
data's push and the ref's leaves no experiment on the remote and is retried; a second run pushes
nothing new."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_repo import experiment, run

from steerpipe import cluster

ray = pytest.importorskip("ray", reason="ray is the cluster extra (pip install -e '.[cluster]')")

pytestmark = pytest.mark.slow

COEFFICIENTS = (0.5, 2.0)


def dies_twice(exp: cluster.Experiment, git_url: str, dvc_url: str) -> dict:
    """``run_experiment``, whose worker process dies twice for the experiment $DIE_NAME (the
    count is in $DIE_FILE): first between the data's push and the ref's, then as the next
    task starts (its work would be the retry's, so a death before it tests the same retry)."""
    counter = Path(os.environ["DIE_FILE"])
    mine = exp.name == os.environ["DIE_NAME"]

    def deaths() -> int:
        return int(counter.read_text()) if counter.exists() else 0

    def die(at: int) -> None:
        if mine and deaths() == at:
            counter.write_text(str(at + 1))
            os._exit(1)  # the worker dies: a system failure to Ray, not an exception

    die(at=1)
    return cluster.run_experiment(exp, git_url, dvc_url, before_ref=lambda: die(at=0))


def metrics_of(shown: object, name: str) -> dict | None:
    """The report's metrics of experiment ``name`` in ``dvc exp show --json``."""
    data = experiment(shown, name)
    return None if data is None else data["metrics"]["data/report/metrics.json"]["data"]


def test_queued_experiments_run_on_ray_and_come_back(repo: Path, tmp_path: Path, capsys) -> None:
    git_url, dvc_url = str(tmp_path / "remote.git"), str(tmp_path / "dvc-store")
    run(tmp_path, "git", "init", "-q", "--bare", git_url)
    run(repo, "git", "push", "-q", git_url, "HEAD:refs/heads/main")
    run(repo, "dvc", "remote", "add", "--local", "-f", "-d", "store", dvc_url)
    run(repo, "dvc", "push", "-q", "--run-cache")
    for c in COEFFICIENTS:  # as a researcher queues a sweep; the report is the target
        run(repo, "dvc", "exp", "run", "-q", "--queue", "-S", f"steer.coefficient={c}",
            "-n", f"ray-{c}", "report")  # fmt: skip
    experiments = cluster.queued(repo)
    assert sorted(e.name for e in experiments) == [f"ray-{c}" for c in COEFFICIENTS]
    # a task's checkout: the baseline, the queued change on top, and the targets it was given
    exp = next(e for e in experiments if e.name == "ray-0.5")
    cluster.publish(exp, git_url, repo)
    work = tmp_path / "checkout"
    work.mkdir()
    assert cluster.checkout(exp, git_url, work) == ["report"]
    assert run(work, "git", "rev-parse", "HEAD").stdout.strip() == exp.baseline_rev
    assert yaml.safe_load((work / "params.yaml").read_text())["steer"]["coefficient"] == 0.5
    assert "params.yaml" in run(work, "git", "diff", "--name-only").stdout.split()
    assert run(work, "git", "diff", "--cached", "--name-only").stdout == ""  # left unstaged
    assert not (work / ".dvc/tmp/repro.dat").exists()

    counter = tmp_path / "deaths"
    env = {"DIE_FILE": str(counter), "DIE_NAME": "ray-2.0"}
    tests = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
        runtime_env={"env_vars": env},
    )  # fmt: skip
    try:
        kwargs = {"git_url": git_url, "dvc_url": dvc_url, "cwd": repo, "task": dies_twice}
        # no retries: the death is reported by name, and its experiment is not on the remote
        first = cluster.run(experiments, retries=0, **kwargs)
        assert first == {"done": ["ray-0.5"], "skipped": [], "failed": ["ray-2.0"]}
        assert cluster.pushed(git_url, tmp_path) == {"ray-0.5"}
        # with retries: it dies once more (as it starts), the retry finishes it, taking the
        # sampling stage's outputs that the first dead task pushed (`dvc exp run --pull`)
        # instead of sampling again
        # (judge@steer and report write metrics that DVC keeps in git, not on its remote: they
        # run again)
        capsys.readouterr()
        second = cluster.run(experiments, retries=2, **kwargs)
        assert second == {"done": ["ray-2.0"], "skipped": ["ray-0.5"], "failed": []}
        printed = capsys.readouterr().out
        assert re.search(r"done +ray-2\.0 in .* s \(from the run cache: steer\)", printed), printed
        assert counter.read_text() == "2"
        refs = run(tmp_path, "git", "ls-remote", git_url).stdout
        third = cluster.run(experiments, retries=2, **kwargs)
        assert third == {"done": [], "skipped": ["ray-0.5", "ray-2.0"], "failed": []}
        assert run(tmp_path, "git", "ls-remote", git_url).stdout == refs  # nothing new
    finally:
        ray.shutdown()

    for c in COEFFICIENTS:  # the same experiments, run here
        run(repo, "dvc", "exp", "run", "-q", "-S", f"steer.coefficient={c}", "-n", f"local-{c}",
            "report")  # fmt: skip
    local = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", "-b", "main", git_url, str(clone))
    run(clone, "dvc", "remote", "add", "--local", "-f", "-d", "store", dvc_url)
    run(clone, "dvc", "exp", "pull", "-q", "origin", *[f"ray-{c}" for c in COEFFICIENTS])
    shown = json.loads(run(clone, "dvc", "exp", "show", "--json").stdout)
    for c in COEFFICIENTS:
        got, want = metrics_of(shown, f"ray-{c}"), metrics_of(local, f"local-{c}")
        assert got is not None and want is not None
        assert got == want and got["cell"]["coefficient"] == c
    # the outputs came back too: the clone applies an experiment and reads its samples
    run(clone, "dvc", "exp", "apply", "-q", "ray-2.0")
    assert (clone / "data/steer/judged.parquet").stat().st_size > 0


def test_remotes_and_an_empty_queue_are_named(tmp_path: Path, monkeypatch) -> None:
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "dvc", "init", "-q")
    with pytest.raises(SystemExit, match="no DVC remote: add one"):
        cluster.remote_url(tmp_path, "dvc", None)
    with pytest.raises(SystemExit, match="no DVC remote named 'nope'"):
        cluster.remote_url(tmp_path, "dvc", "nope")
    run(tmp_path, "git", "remote", "add", "origin", "/srv/git/project.git")
    run(tmp_path, "dvc", "remote", "add", "-d", "store", "/srv/dvc")
    assert cluster.remote_url(tmp_path, "git", None) == "/srv/git/project.git"
    assert cluster.remote_url(tmp_path, "dvc", None) == "/srv/dvc"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no queued experiments"):
        cluster.main(["run"])


def test_without_ray_the_command_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    exp = cluster.Experiment("e", "0" * 40, "0" * 40)
    with pytest.raises(SystemExit, match=r"ray is not installed: pip install -e '\.\[cluster\]'"):
        cluster.run([exp], git_url=str(tmp_path), dvc_url=str(tmp_path), cwd=tmp_path)
