"""The tiny DVC pipeline in a scratch git repository, shared by the pipeline test modules.

A tiny random Llama (from a config folder) and a local Parquet data set stand in for the
packaged model and the hub data set, so a full ``dvc repro`` takes about three minutes on the
2-core machine. It is built once per test run (``build_repo``, through conftest's
``first_build``) and each test module works in its own copy, so that the two can run side by
side (``pytest -n 2``); each test starts from the first commit (``restore``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tiny import synthetic_rows

from steerpipe.steering.steps import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
ALL = {
    "steps_dataset",
    "stability",
    "prepare",
    "activations",
    "vectors",
    "sweep",
    "sweep_logprob",
    "sweep_kl",
    "judge@sweep",
    "steer",
    "judge@steer",
    "report",
    "side_effects",
    "solve_problems",
    "solve_control",
    "solve_steered",
    "solve_report",
    "transcoder",
    "questions",
    "traces",
    "neurons",
    "neuron_eval",
    "neuron_report",
}
EXPERIMENT_B = {"questions", "traces", "neurons", "neuron_eval", "neuron_report"}


def run(
    repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        **(env or {}),
    }
    proc = subprocess.run(args, cwd=repo, env=full_env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_stage(repo: Path, name: str) -> subprocess.CompletedProcess[str]:
    """One stage's cmd from dvc.yaml, run directly (not through dvc), not checked."""
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][name]["cmd"].split()
    assert cmd[0] == "python"
    return run(repo, sys.executable, *cmd[1:], check=False)


def ran(proc: subprocess.CompletedProcess[str]) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout))


def set_params(repo: Path, **changes: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():  # section__key, or section__sub__key for a nested one
        *path, name = key.split("__")
        node = params
        for part in path:
            node = node[part]
        node[name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def build_repo(repo: Path, tiny_model_dir: Path) -> Path:
    """The tiny pipeline in a new git + DVC repository at ``repo``, run once and committed."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc-plots")
    pq.write_table(pa.Table.from_pylist(synthetic_rows(24), schema=SCHEMA), repo / "steps.parquet")
    set_params(
        repo,
        model__name=str(tiny_model_dir),
        model__random_init=True,
        steps__source="steps.parquet",
        # a random model's next token is near uniform, so its top-p nucleus is most of the
        # vocabulary and every sampled token sorts and draws noise for 49,152 (8 s for the
        # default 24 steps x 4 x 8 tokens): the regenerations here are few and short
        stability__n_samples=2,
        stability__max_new_tokens=4,
        prepare__kinds=["conclusion", "verification"],
        prepare__test_size=4,  # 1 for the sweep, 3 for steer
        prepare__positive_test_size=4,
        sampling__max_new_tokens=4,
        sampling__batch_size=8,
        sweep__layers=[1, 2],
        sweep__positions=[0, 1],
        sweep__coefficients=[1.0, 2.0],
        sweep__n_prompts=1,
        sweep__n_samples=2,
        steer__n_samples=2,
        steer__coefficients=[2.0],
        steer__scale="norm",  # the default is absolute; this exercises the other
        # a random model finds every text unlikely (about log(vocab) nats a token): judge the
        # tiny pipeline's texts by their repetition only
        quality__max_nll=100.0,
        solve__problems__n=2,
        solve__generation__max_new_tokens=4,
        solve__generation__batch_size=8,
        solve__coefficients=[2.0],
        transcoder__layers=[1],
        transcoder__tasks=["gsm_symbolic"],
        transcoder__texts_per_task=6,
        transcoder__d_sae=32,
        transcoder__steps=20,
        transcoder__batch_size=64,
        questions__n_trace=4,
        questions__n_eval=6,
        traces__layers=[1],
        traces__min_fve=None,  # 20 steps on a random model learn nothing: measure only
        traces__n_steps=3,
        traces__batch_size=4,
        neuron_eval__max_new_tokens=3,
        neuron_eval__batch_size=8,
        kl__n_texts=2,
        kl__tokens=16,
    )
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "test@example.com")
    run(repo, "git", "config", "user.name", "test")
    run(repo, "dvc", "init", "-q")
    shutil.move(repo / ".dvc-plots", repo / ".dvc" / "plots")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "init")
    first = run(repo, "dvc", "repro")
    assert ran(first) == ALL
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "first run")
    return repo


def restore(repo: Path) -> None:
    """Back to the committed params, code and lock file, and their outputs."""
    run(repo, "git", "checkout", "-q", "--", ".")
    run(repo, "dvc", "checkout", "-q")


def run_queue(repo: Path, env: dict[str, str] | None = None, timeout_s: float = 600) -> str:
    """``dvc queue start -j 2``, then ``dvc queue status`` until nothing is queued or running;
    the last status."""
    run(repo, "dvc", "queue", "start", "-j", "2", env=env)
    deadline = time.monotonic() + timeout_s
    status = run(repo, "dvc", "queue", "status").stdout
    while re.search(r"\b(Queued|Running)\b", status):
        assert time.monotonic() < deadline, f"the queue did not finish in {timeout_s} s:\n{status}"
        time.sleep(3)
        status = run(repo, "dvc", "queue", "status").stdout
    return status


def experiment(shown: object, name: str) -> dict | None:
    """The ``data`` of experiment ``name`` in ``dvc exp show --json`` (nested revisions)."""
    if isinstance(shown, dict):
        if shown.get("name") == name and isinstance(shown.get("data"), dict):
            return shown["data"]
        shown = list(shown.values())
    if isinstance(shown, list):
        for item in shown:
            found = experiment(item, name)
            if found is not None:
                return found
    return None
