"""The DVC pipeline end to end, with real ``dvc`` in a temporary git repository.

A tiny random Llama (from a config folder) and a local Parquet data set stand in for the
packaged model and the hub data set, so a full ``dvc repro`` takes about a minute. The tests
share one repository (caching, sweeps, the queue, and bad input); each starts from its first
commit's params, code and outputs (``clean``), so they pass in any order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fake_batches import FakeServer, FakeState, rule_answer
from tiny import synthetic_rows

from steerpipe.steps import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
ALL = {
    "steps_dataset",
    "prepare",
    "activations",
    "vectors",
    "sweep",
    "judge@sweep",
    "steer",
    "judge@steer",
    "report",
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
    for key, value in changes.items():
        section, name = key.split("__")
        params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
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
        prepare__kinds=["conclusion", "verification"],
        prepare__test_size=3,
        sampling__max_new_tokens=4,
        sampling__batch_size=8,
        sweep__layers=[1, 2],
        sweep__positions=[0, 1],
        sweep__n_prompts=1,
        sweep__n_samples=2,
        steer__n_samples=2,
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


@pytest.fixture(autouse=True)
def clean(repo: Path) -> None:
    restore(repo)


def test_outputs_and_metrics(repo: Path) -> None:
    from steerpipe.stats import fisher_p

    metrics = json.loads((repo / "data/report/metrics.json").read_text())
    control, steered = metrics["control"], metrics["steered"]
    assert control["n"] == steered["n"] == 3 * 2
    # the report's statistics follow from its own counts
    want_p = fisher_p(steered["count"], steered["n"], control["count"], control["n"])
    assert metrics["fisher_p"] == pytest.approx(want_p)
    assert metrics["difference"] == pytest.approx(steered["rate"] - control["rate"])
    assert steered["count"] == steered["categories"]["concluding"]
    assert (repo / "data/report/sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((repo / "data/prepare/metrics.json").read_text())["conclusion"]["test"] == 3


def test_experiment_b_outputs(repo: Path) -> None:
    counts = json.loads((repo / "data/neurons/metrics.json").read_text())["layer_1"]
    assert counts["features"] == 32
    assert counts["reasoning"] + counts["memory"] == counts["alive"] <= 32
    report = json.loads((repo / "data/neuron_report/metrics.json").read_text())
    conditions = report["conditions"]
    names = {f"{s}@1x{x}" for s in ("reasoning", "memory") for x in ("0.5", "1", "2")}
    assert set(conditions) == {"base"} | names
    assert all(c["accuracy"]["n"] == 6 for c in conditions.values())
    # strength 1.0 adds exactly nothing: the same text as the unhooked model, in the pipeline
    assert conditions["reasoning@1x1"]["text_changed_rate"] == 0
    assert conditions["memory@1x1"]["text_changed_rate"] == 0
    assert conditions["memory@1x2"]["n_features"] == conditions["reasoning@1x2"]["n_features"]
    assert (repo / "data/neuron_report/accuracy.png").read_bytes()[:4] == b"\x89PNG"
    rows = pq.read_table(repo / "data/neuron_eval/generations.parquet").to_pylist()
    assert len(rows) == 7 * 6 and not any(r["generation"].startswith("Question") for r in rows)
    traced = {r["id"] for r in pq.read_table(repo / "data/questions/trace.parquet").to_pylist()}
    assert traced and not traced & {r["id"] for r in rows}
    fidelity = json.loads((repo / "data/traces/metrics.json").read_text())["fidelity"]["layer_1"]
    assert fidelity["input_hook"] == "mlp.hook_in" and fidelity["tokens"] > 100


def test_second_repro_does_nothing(repo: Path) -> None:
    assert ran(run(repo, "dvc", "repro")) == set()


def restore(repo: Path) -> None:
    """Back to the committed params, code and lock file, and their outputs."""
    run(repo, "git", "checkout", "-q", "--", ".")
    run(repo, "dvc", "checkout", "-q")


# Another x86-64 CPU, as far as the float bits go: ATen's AVX2 kernels and MKL's AVX2 code
# path, where this machine would take its own (AVX-512 on the CI machines). Thread counts do
# not change the bits (1 and 2 threads give identical forwards); instruction sets do.
OTHER_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
# What docs/pipeline.md ("Reproducibility") says may move on another CPU, per metrics file:
# the largest change of any number in it, relative to the number (or to 1 below 1); 0: identical.
TOLERANCE = {
    "data/vectors/metrics.json": 0,
    "data/report/metrics.json": 0,
    "data/transcoder/metrics.json": 1e-3,
    "data/traces/metrics.json": 5e-3,
    "data/neurons/metrics.json": 1e-2,
    "data/neuron_report/metrics.json": 5e-2,
}


def leaves(tree: object, prefix: str = "") -> dict[str, object]:
    """Every value of a JSON tree by its path."""
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in leaves(sub, f"{prefix}.{key}").items()
        }
    return {prefix: tree}


def differs(a: object, b: object, tolerance: float) -> bool:
    numeric = isinstance(a, int | float) and isinstance(b, int | float)
    if numeric:
        return abs(a - b) > tolerance * max(1.0, abs(a))  # type: ignore[operator, arg-type]
    return a != b


def test_another_cpus_kernels_agree_within_the_stated_tolerance(repo: Path) -> None:
    before = {path: leaves(json.loads((repo / path).read_text())) for path in TOLERANCE}
    texts = pq.read_table(repo / "data/steer/judged.parquet").column("text").to_pylist()
    # every stage with float work on the model, and what follows it (the tiny pipeline's
    # steps come from a file and its questions from reasoning-gym: no model runs there)
    proc = run(
        repo, "dvc", "repro", "-f", "--downstream", "activations", "transcoder", env=OTHER_CPU
    )
    assert ran(proc) == ALL - {"steps_dataset", "prepare", "questions"}
    for path, tolerance in TOLERANCE.items():
        after = leaves(json.loads((repo / path).read_text()))
        assert set(after) == set(before[path]), path
        moved = {
            k: (v, after[k]) for k, v in before[path].items() if differs(v, after[k], tolerance)
        }
        assert not moved, (path, moved)
    assert pq.read_table(repo / "data/steer/judged.parquet").column("text").to_pylist() == texts


def test_editing_a_stage_reruns_it_and_downstream(repo: Path) -> None:
    path = repo / "stages/vectors.py"
    source = path.read_text()
    assert "vectors = (pos - neg)" in source
    path.write_text(source.replace("vectors = (pos - neg)", "vectors = (2 * pos - neg)", 1))
    proc = run(repo, "dvc", "repro")
    # the stages reading the (now different) vectors re-run; nothing upstream does
    assert {"vectors", "sweep", "steer"} <= ran(proc)
    assert ran(proc) <= ALL - {"steps_dataset", "prepare", "activations"}
    restore(repo)
    assert ran(run(repo, "dvc", "repro")) == set()


def test_boolq_file_reruns_only_experiment_b(repo: Path) -> None:
    rows = [
        {"question": f"is {i} even", "answer": i % 2 == 0, "passage": f"{i} is a number."}
        for i in range(12)
    ]
    pq.write_table(pa.Table.from_pylist(rows), repo / "boolq.parquet")
    set_params(repo, questions__source="boolq.parquet")
    assert ran(run(repo, "dvc", "repro")) == EXPERIMENT_B
    traces = pq.read_table(repo / "data/traces/traces.parquet").to_pylist()
    assert len(traces) == 3 * 4 and all(" even\nPassage: " in t["prompt"] for t in traces)
    set_params(repo, questions__n_eval=7)  # more evaluation questions: the traces stay cached
    assert ran(run(repo, "dvc", "repro")) == {"questions", "neuron_eval", "neuron_report"}


def test_missing_transcoder_layer_fails_cleanly(repo: Path) -> None:
    set_params(repo, traces__layers=[2])
    proc = run_stage(repo, "traces")
    assert proc.returncode == 1
    assert "no transcoder for layer 2: data/transcoder/weights/layer_2.safetensors" in proc.stderr
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_fidelity_gate_stops_the_traces_and_writes_nothing(repo: Path) -> None:
    before = {p: p.read_bytes() for p in (repo / "data/traces").rglob("*") if p.is_file()}
    set_params(repo, traces__min_fve=0.99)
    proc = run_stage(repo, "traces")
    last = proc.stderr.strip().splitlines()[-1]  # one line, after any progress bars
    assert proc.returncode == 1 and last.startswith(
        "error: transcoder data/transcoder/weights/layer_1.safetensors (layer 1) read at "
        "mlp.hook_in (from metadata input_hook) explains"
    ), proc.stderr[-2000:]
    assert "below traces.min_fve=0.99" in last
    after = {p: p.read_bytes() for p in (repo / "data/traces").rglob("*") if p.is_file()}
    assert after == before
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_exp_run_with_set_param(repo: Path) -> None:
    # a new steer cell re-runs steer and what follows it; nothing before steer
    proc = run(repo, "dvc", "exp", "run", "-S", "steer.layer=2", "-S", "steer.position=1")
    assert ran(proc) == {"steer", "judge@steer", "report"}
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert "data/report/metrics.json" in text and "fisher_p" in text


def _experiment(shown: object, name: str) -> dict | None:
    """The ``data`` of experiment ``name`` in ``dvc exp show --json`` (nested revisions)."""
    if isinstance(shown, dict):
        if shown.get("name") == name and isinstance(shown.get("data"), dict):
            return shown["data"]
        shown = list(shown.values())
    if isinstance(shown, list):
        for item in shown:
            found = _experiment(item, name)
            if found is not None:
                return found
    return None


def test_queued_sweep(repo: Path) -> None:
    for layer in (1, 2):
        run(
            repo,
            "dvc",
            "exp",
            "run",
            "--queue",
            "-S",
            f"steer.layer={layer}",
            "-S",
            "steer.position=0",
            "-n",
            f"q-layer-{layer}",
        )
    run(repo, "dvc", "queue", "start", "-j", "2")
    deadline = time.monotonic() + 600
    status = run(repo, "dvc", "queue", "status").stdout
    while re.search(r"\b(Queued|Running)\b", status):
        assert time.monotonic() < deadline, f"the queue did not finish in 600 s:\n{status}"
        time.sleep(3)
        status = run(repo, "dvc", "queue", "status").stdout
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    for layer in (1, 2):
        line = next(x for x in status.splitlines() if f"q-layer-{layer}" in x)
        assert "Success" in line, status
        data = _experiment(shown, f"q-layer-{layer}")
        assert data is not None, f"q-layer-{layer} not in dvc exp show"
        params = data["params"]["params.yaml"]["data"]
        assert (params["steer"]["layer"], params["steer"]["position"]) == (layer, 0)
        metrics = data["metrics"]["data/report/metrics.json"]["data"]
        assert metrics["cell"]["layer"] == layer and metrics["steered"]["n"] == 3 * 2


def test_anthropic_backend_gives_the_same_metrics(repo: Path, tmp_path: Path) -> None:
    want = (repo / "data/report/metrics.json").read_text()
    server = FakeServer(FakeState(answer=rule_answer))
    env = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-ant-test-key"}
    try:
        set_params(
            repo,
            judge__backend="anthropic",
            judge__store=str(tmp_path / "store"),
            judge__poll_seconds=0.05,
            judge__max_poll_seconds=0.2,
        )
        proc = run(repo, "dvc", "repro", env=env)
        assert {"judge@sweep", "judge@steer"} <= ran(proc)
        assert (repo / "data/report/metrics.json").read_text() == want
        stats = json.loads((repo / "data/sweep/judge.json").read_text())
        assert stats["backend"] == "anthropic" and stats["unjudged"] == 0
        assert stats["requests_sent"] == stats["unique_requests"] > 0
        sent = server.state.requests_received
        set_params(repo, judge__max_wait_seconds=100)  # re-runs both judges: all cached
        assert {"judge@sweep", "judge@steer"} <= ran(run(repo, "dvc", "repro", env=env))
        assert server.state.requests_received == sent
        assert json.loads((repo / "data/sweep/judge.json").read_text())["requests_sent"] == 0
    finally:
        server.stop()
        restore(repo)


def test_bad_layer_fails_cleanly(repo: Path) -> None:
    set_params(repo, steer__layer=99, steer__position=0)
    proc = run(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert "layer 99 has no vector" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (repo / "data/steer/generations.parquet").exists()
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_empty_after_filtering_fails_cleanly(repo: Path) -> None:
    set_params(repo, prepare__min_step_tokens=500)
    proc = run_stage(repo, "prepare")
    assert proc.returncode == 1
    assert "only 0 'conclusion' examples are left after filtering" in proc.stderr
    assert "prepare.min_step_tokens=500" in proc.stderr
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_a_param_of_the_wrong_type_is_named(repo: Path) -> None:
    set_params(repo, sweep__n_samples="two")
    proc = run_stage(repo, "sweep")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: sweep.n_samples must be an integer, got 'two'"


def test_row_missing_a_field_fails_cleanly(repo: Path) -> None:
    rows = synthetic_rows(4)
    rows[2]["steps"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), repo / "bad.parquet")
    set_params(repo, steps__source="bad.parquet")
    proc = run_stage(repo, "steps_dataset")
    assert proc.returncode == 1
    assert "row 2: missing field(s) steps" in proc.stderr
    run(repo, "git", "checkout", "-q", "--", "params.yaml")
