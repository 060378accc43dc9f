"""benchmarks/steering.py in CI-sized form: it runs both paths and prints the issue's table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_prints_its_table(tmp_path: Path) -> None:
    sizes = ["--prompts", "2", "--samples", "2", "--prompt-tokens", "16", "--new-tokens", "3"]
    sizes += ["--sweep-cells", "2", "--capture-prompts", "3", "--seed-rows", "3", "--variants"]
    report = str(tmp_path / "bench.json")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "steering.py"), *sizes, "--json", report],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert [c.strip() for c in header[:5]] == ["work", "path", "seconds", "tokens/s", "x seed loop"]
    works = [r[0].strip() for r in body]
    evaluation = "steered eval: 2 prompts x 2 samples"
    sweep = "sweep: 2 cells x 2 samples, 1 prompt"
    capture = "capture: 3 prompts, 30 layers x 5 positions"
    assert works == [evaluation] * 6 + [sweep] * 2 + [capture] * 2
    assert [r[1].strip() for r in body] == [
        "seed loop (3 of 4 calls, scaled)",  # 2 prompts x 2 samples
        "pipeline",
        "pipeline, decode attention repeat_kv",
        "pipeline, decode attention enable_gqa",
        "pipeline, no shared prefill, dynamic cache",
        "pipeline, no shared prefill, static cache",
        "seed loop (3 of 4 calls, scaled)",
        "pipeline",
        "seed loop",  # 3 prompts: all of them
        "pipeline",
    ]
    assert all(float(r[2]) > 0 for r in body)
    assert [float(r[4]) for r in (body[0], body[6], body[8])] == [1.0, 1.0, 1.0]  # the unit
    assert float(body[9][5]) > 0  # capture's TFLOP/s
    assert "capture: pipeline and seed loop differ by" in proc.stdout
    saved = json.loads(Path(report).read_text())
    assert [r["path"] for r in saved["rows"]] == [r[1].strip() for r in body]
    assert [round(r["seconds"], 2) for r in saved["rows"]] == [float(r[2]) for r in body]
    assert saved["settings"]["seed_rows"] == 3 and saved["capture_diff"] < 1e-4
