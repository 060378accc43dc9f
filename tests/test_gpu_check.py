"""scripts/gpu-check.sh in its CPU form: every part runs and lands in one table and its JSON,
the benchmark's rows (benchmarks/steering.py) included.

On a GPU machine the same script runs the paper sizes on cuda; here the parts that need a GPU
say "skipped", and the others run small, so that the script that a lent GPU runs first has
already run end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import Run, benchmark_rows  # noqa: E402


def test_parts_report_pass_fail_and_timeout(tmp_path: Path) -> None:
    run = Run(tmp_path, budget_s=60)
    assert run("ok", [sys.executable, "-c", "print('hi')"], 30)[0] == "pass"
    assert run("bad", [sys.executable, "-c", "raise SystemExit(3)"], 30)[0] == "fail"
    status, seconds = run("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1)
    assert status == "timeout" and seconds < 10
    assert "hi" in (tmp_path / "ok.log").read_text()


def test_benchmark_rows_meet_or_miss_the_targets() -> None:
    rows = [
        {"work": "steered eval: 50 prompts x 5 samples", "path": "seed loop", "x_seed": 1.0},
        {"work": "steered eval: 50 prompts x 5 samples", "path": "pipeline", "x_seed": 250.0},
        {"work": "sweep: 75 cells x 5 samples, 1 prompt", "path": "pipeline", "x_seed": 299.0},
        {"work": "capture: 300 prompts, 28 layers", "path": "pipeline", "x_seed": 9.0},
    ]
    got = benchmark_rows({"rows": rows})
    assert [r["status"] for r in got] == ["met", "missed", "missed"]  # capture: no GPU peak
    rows[3]["peak_fraction"] = 0.52
    assert benchmark_rows({"rows": rows})[2]["status"] == "met"


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(out),
        "GPU_CHECK_WHEELS": "none",  # this machine's venv has everything
        # no preset dry run: tests/test_presets.py runs the same ones (scratch_repo, then
        # `python -m steerpipe_presets NAME --dry-run`); here they would add 1.5-2 min to CI
        "GPU_CHECK_ARGS": "--device cpu --quick --presets --budget-s 900",
        "STEERPIPE_GPU_LOCKS": str(tmp_path / "locks"),
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "gpu-check.json").read_text())
    status = {(p["part"], p["check"]): p["status"] for p in summary["parts"]}
    assert status == {
        ("tests", "pytest -m device"): "pass",
        ("paths", "fit"): "skipped",
        ("paths", "noise"): "pass",
        ("paths", "oom"): "skipped",
        ("paths", "device_map"): "pass",
        ("paths", "allocator"): "skipped",
        ("benchmark", "steering.py"): "pass",
        ("benchmark", "steered eval: 2 prompts x 2 samples"): "missed",  # tiny, on a CPU
        ("benchmark", "sweep: 2 cells x 2 samples, 1 prompt"): "missed",
        ("benchmark", "capture: 3 prompts, 30 layers x 5 positions"): "missed",
    }
    bench = summary["benchmark"]
    evaluation, sweep = (
        "steered eval: 2 prompts x 2 samples",
        "sweep: 2 cells x 2 samples, 1 prompt",
    )
    capture = "capture: 3 prompts, 30 layers x 5 positions"
    assert [(r["work"], r["path"]) for r in bench["rows"]] == [
        (evaluation, "seed loop (2 of 4 calls, scaled)"),  # 2 prompts x 2 samples
        (evaluation, "pipeline, first call at this size"),
        (evaluation, "pipeline"),
        (evaluation, "pipeline, decode attention repeat_kv"),
        (evaluation, "pipeline, decode attention enable_gqa"),
        (evaluation, "pipeline, no shared prefill, growing cache"),
        (evaluation, "pipeline, no shared prefill, dynamic cache"),
        (evaluation, "pipeline, no shared prefill, static cache"),
        (sweep, "seed loop (2 of 4 calls, scaled)"),
        (sweep, "pipeline, first call at this size"),
        (sweep, "pipeline"),
        (capture, "seed loop (2 of 3 calls, scaled)"),
        (capture, "pipeline, first call at this size"),
        (capture, "pipeline"),
    ]
    assert all(r["seconds"] > 0 and r["tokens"] > 0 for r in bench["rows"])
    assert [bench["rows"][i]["x_seed"] for i in (0, 8, 11)] == [1.0, 1.0, 1.0]  # the unit
    assert bench["rows"][13]["tflops"] > 0
    assert bench["capture_diff"] < 1e-4  # the pipeline captures what the seed loop does
    markdown = (out / "gpu-check.md").read_text()
    assert proc.stdout.rstrip("\n").endswith(markdown.rstrip("\n"))  # printed last
    assert "| benchmark | steering.py | pass |" in markdown and "| presets |" not in markdown
    assert (
        "| steered eval: 2 prompts x 2 samples | pipeline, decode attention repeat_kv |" in markdown
    )
    assert {p.name for p in out.iterdir()} == {
        "gpu-check.md",
        "gpu-check.json",
        "tests.log",
        "paths.log",
        "benchmark.log",
    }
