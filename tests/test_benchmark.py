"""benchmarks/steering.py in CI-sized form: it runs both paths and prints the issue's table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_prints_its_table() -> None:
    sizes = ["--prompts", "2", "--samples", "2", "--prompt-tokens", "16", "--new-tokens", "3"]
    sizes += ["--sweep-cells", "2", "--capture-prompts", "3"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "steering.py"), *sizes],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert [c.strip() for c in header[:5]] == ["work", "path", "seconds", "tokens/s", "x seed loop"]
    works = [r[0].strip() for r in body]
    assert works == [
        "steered eval: 2 prompts x 2 samples",
        "steered eval: 2 prompts x 2 samples",
        "sweep: 2 cells x 2 samples, 1 prompt",
        "sweep: 2 cells x 2 samples, 1 prompt",
        "capture: 3 prompts, 30 layers x 5 positions",
        "capture: 3 prompts, 30 layers x 5 positions",
    ]
    assert [r[1].strip() for r in body] == ["seed loop", "pipeline"] * 3
    assert all(float(r[2]) > 0 for r in body)
    assert [float(r[4]) for r in body[::2]] == [1.0, 1.0, 1.0]  # the seed loop is the unit
    assert float(body[5][5]) > 0  # capture's TFLOP/s
    assert "capture: pipeline and seed loop differ by" in proc.stdout
