"""presets: the dvc command each preset makes, and each preset's dry run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from steerpipe.config import StageError
from steerpipe_presets.presets import (
    check_keys,
    command,
    flatten,
    load_preset,
    merge,
    override_value,
    scratch_repo,
)

ROOT = Path(__file__).resolve().parents[1]


def test_merge_and_flatten() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    assert merge(base, {"a": {"y": [3]}, "c": 4}) == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}
    assert flatten({"a": {"x": 1, "y": {"z": None}}, "b": [1]}) == {
        "a.x": 1,
        "a.y.z": None,
        "b": [1],
    }


def test_override_values() -> None:
    assert override_value("deepseek-ai/R1") == "'deepseek-ai/R1'"
    assert override_value([5, 6]) == "[5,6]"
    assert override_value(["conclusion", "verification"]) == "['conclusion','verification']"
    assert override_value(True) == "true" and override_value(None) == "null"
    assert override_value(0.6) == "0.6"
    with pytest.raises(StageError, match="quotes"):
        override_value("it's")


def test_unknown_keys_and_presets_are_errors() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    check_keys(params, {"model.name": "x", "sweep.layers": [1]})
    with pytest.raises(StageError, match=r"\['sweep.layer'\]"):
        check_keys(params, {"sweep.layer": 1})
    with pytest.raises(StageError, match="there are: .*paper-a"):
        load_preset("paper-z", ROOT)
    with pytest.raises(StageError, match="key=value"):
        command("paper-a", extra=["steer.layer"], root=ROOT)


def test_paper_a_command() -> None:
    cmd = command("paper-a", extra=["steer.layer=auto"], root=ROOT)
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "paper-a"]
    assert cmd[-2:] == ["report", "solve_report"]  # the targets, after the -S pairs
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"]
    for want in (
        "model.name='deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B'",
        "model.dtype='bfloat16'",
        "steps.source='immindich/reasoning-steps-labeled'",
        "prepare.kinds=['conclusion','verification']",
        "prepare.min_step_tokens=10",
        "prepare.max_prompt_tokens=1600",
        "prepare.test_size=50",
        "prepare.positive_test_size=50",
        "sweep.layers=[5,6,7,8,9,10,11,12,13,14,15,16,17,18,19]",
        "sweep.n_samples=5",
        "sampling.temperature=0.6",
        "sampling.top_p=0.95",
        "steer.position=1",
        "judge.backend='anthropic'",
        "solve.problems.source='HuggingFaceH4/MATH-500'",
        "solve.problems.n='all'",
        "solve.generation.max_new_tokens=32768",
    ):
        assert want in sets, want
    # the user's value replaces the preset's 11: one -S per key, the user's last
    assert [s for s in sets if s.startswith("steer.layer=")] == ["steer.layer=auto"]
    assert sets[-1] == "steer.layer=auto"


def test_a_variant_extends_its_preset() -> None:
    auto = load_preset("paper-a-auto", ROOT)
    base = load_preset("paper-a", ROOT)
    assert auto["params"]["steer"]["layer"] == auto["params"]["steer"]["position"] == "auto"
    assert auto["params"]["sweep"] == base["params"]["sweep"] and auto["target"] == base["target"]
    sets = command("paper-a-auto", root=ROOT)
    assert "steer.layer='auto'" in sets and "model.dtype='bfloat16'" in sets
    assert sets[4] == "paper-a-auto"


def test_paper_b_command(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="traces.transcoders: .* does not exist; pass -S"):
        command("paper-b", root=ROOT)  # the placeholder folder: the user must give theirs
    cmd = command("paper-b", extra=[f"traces.transcoders={tmp_path}"], root=ROOT)
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"]
    assert cmd[-1] == "neuron_report"
    for want in (
        "model.name='meta-llama/Llama-3.1-8B-Instruct'",
        "questions.source='google/boolq'",
        "questions.n_trace=512",
        "questions.n_eval=300",
        "traces.layers=[0,9,18,27]",
        "traces.n_steps=60",
        "neuron_eval.max_new_tokens=50",
    ):
        assert want in sets, want


def test_paper_b_crv_resolves_the_hub_id(tmp_path: Path, monkeypatch) -> None:
    """The hub id becomes its snapshot folder in the local HF cache (what DVC can track); the
    hub is not asked when the files are there."""
    import huggingface_hub.constants

    from steerpipe_presets import standins

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(StageError, match="not in the local HF cache, and HF_HUB_OFFLINE is set"):
        command("paper-b-crv", root=ROOT)
    snapshot = standins.hub_snapshot(tmp_path, "facebook/crv-8b-instruct-transcoders")
    standins.write_circuit_tracer_set(snapshot, [0, 9, 18, 27], 64)
    cmd = command("paper-b-crv", extra=["neuron_eval.seed=3"], root=ROOT)
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"]
    assert f"traces.transcoders='{snapshot}'" in sets
    assert "traces.file='layer_{layer}.safetensors'" in sets and "traces.layers=[0,9,18,27]" in sets
    assert "model.name='meta-llama/Llama-3.1-8B-Instruct'" in sets and cmd[4] == "paper-b-crv"
    assert sets[-1] == "neuron_eval.seed=3"
    # a layer the cache lacks is fetched (here: refused offline) rather than silently skipped
    with pytest.raises(StageError, match="not in the local HF cache"):
        command("paper-b-crv", extra=["traces.layers=[0,31]"], root=ROOT)


def _repo(tmp_path: Path) -> Path:
    return scratch_repo(ROOT, tmp_path, _env())


def _env() -> dict[str, str]:
    import os

    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}


def _dry_run(repo: Path, name: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "steerpipe_presets", name, "--dry-run"],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_paper_a_dry_run(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    proc = _dry_run(repo, "paper-a")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["model"]["name"] == str((repo / ".dry-run/paper-a/model").resolve())
    assert params["model"]["random_init"] is True
    assert params["prepare"]["kinds"] == ["conclusion", "verification"]
    assert params["sweep"]["layers"] == [5, 11] and params["steer"]["layer"] == 11
    config = json.loads((repo / ".dry-run/paper-a/model/config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["num_hidden_layers"] == 28
    metrics = json.loads((repo / "data/report/metrics.json").read_text())
    assert metrics["cell"] == {"layer": 11, "position": 1, "coefficient": 1.0}
    assert metrics["control"]["n"] == metrics["steered"]["n"] == 2 * 2
    sweep = pq.read_table(repo / "data/sweep/generations.parquet").to_pylist()
    assert {(r["layer"], r["position"]) for r in sweep} == {(5, 0), (5, 1), (11, 0), (11, 1)}
    assert "| control |" in proc.stdout and "22/250 = 0.088" in proc.stdout
    # the solve step, on a stand-in in MATH-500's schema whose first two problems are the
    # steps stand-in's: those are left out
    problems = pq.read_table(repo / "data/solve_problems/problems.parquet").to_pylist()
    indices = [r["index"] for r in problems]
    assert len(indices) == 3 and set(indices) <= {2, 3, 4, 5, 6, 7}  # a seeded draw of the rest
    solved = json.loads((repo / "data/solve_report/metrics.json").read_text())
    assert set(solved["conditions"]) == {"control", "instruction", "dose_0.5", "dose_1.0"}
    assert solved["max_new_tokens"] == 4 and solved["cell"]["layer"] == 11
    assert all(c["accuracy"]["n"] == 3 * 2 for c in solved["conditions"].values())
    assert not (repo / "data/neuron_report").exists()  # only experiment A's chain ran


@pytest.mark.slow
def test_paper_b_dry_run(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _dry_run(repo, "paper-b")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert (
        params["traces"]["layers"] == [0, 9, 18, 27] and params["traces"]["chat_template"] is False
    )
    assert params["traces"]["transcoders"] == str((repo / ".dry-run/paper-b/transcoders").resolve())
    config = json.loads((repo / ".dry-run/paper-b/model/config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 32
    counts = json.loads((repo / "data/neurons/metrics.json").read_text())
    assert sorted(counts) == ["layer_0", "layer_18", "layer_27", "layer_9"]
    report = json.loads((repo / "data/neuron_report/metrics.json").read_text())
    assert all(c["accuracy"]["n"] == 6 for c in report["conditions"].values())
    for layer in (0, 9, 18, 27):  # strength 1 is the unhooked model, at every layer
        assert report["conditions"][f"reasoning@{layer}x1"]["text_changed_rate"] == 0
        assert report["conditions"][f"memory@{layer}x1"]["text_changed_rate"] == 0
    assert not (repo / "data/transcoder").exists()  # nothing trained: the folder is given
    traces = json.loads((repo / "data/traces/metrics.json").read_text())
    assert all(f["input_hook"] == "ln2.hook_normalized" for f in traces["fidelity"].values())
    assert {c["frequency_from"] for c in counts.values()} == {"transcoder"}


@pytest.mark.slow
def test_paper_b_crv_dry_run(tmp_path: Path) -> None:
    """The public circuit-tracer set's path end to end: a hub id resolved from a local HF cache,
    TopK with circuit-tracer's k for that repo, firing frequencies from the traces."""
    repo = _repo(tmp_path)
    _dry_run(repo, "paper-b-crv")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    cache = (repo / ".dry-run/paper-b-crv/hf-cache").resolve()
    snapshot = cache / "models--facebook--crv-8b-instruct-transcoders/snapshots" / ("0" * 40)
    assert params["traces"]["transcoders"] == str(snapshot)
    traces = json.loads((repo / "data/traces/metrics.json").read_text())
    assert sorted(traces["fidelity"]) == ["layer_0", "layer_18", "layer_27", "layer_9"]
    assert all(f["input_hook"] == "mlp.hook_in" for f in traces["fidelity"].values())
    assert all(f["l0"] == 128 for f in traces["fidelity"].values())  # TopK, k = 128
    counts = json.loads((repo / "data/neurons/metrics.json").read_text())
    assert {c["frequency_from"] for c in counts.values()} == {"traces"}
    report = json.loads((repo / "data/neuron_report/metrics.json").read_text())
    for layer in (0, 9, 18, 27):  # strength 1 is the unhooked model, with TopK too
        assert report["conditions"][f"reasoning@{layer}x1"]["text_changed_rate"] == 0
    assert not (repo / "data/transcoder").exists()
