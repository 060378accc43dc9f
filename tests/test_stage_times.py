"""scripts/stage_times.py: the per-stage wall-time table from a pipeline run's output."""

from __future__ import annotations

import importlib.util
import io
import sys

import pytest
from tiny import ROOT

spec = importlib.util.spec_from_file_location("stage_times", ROOT / "scripts" / "stage_times.py")
assert spec is not None and spec.loader is not None
stage_times = importlib.util.module_from_spec(spec)
sys.modules["stage_times"] = stage_times  # its dataclass looks its module up there
spec.loader.exec_module(stage_times)

LOG = """100 + bash scripts/setup.sh
160 Running stage 'steps_dataset':
160 > python stages/steps_dataset.py
generate:  50%|#####     | a tqdm line the stamping loop split
283 Running stage 'prepare':
288 Stage 'report' didn't change, skipping
290 Running stage 'neuron_eval':
458 Experiment A: ...
"""


def test_stage_seconds_from_a_stamped_log() -> None:
    got = stage_times.stage_seconds(stage_times.from_log(LOG))
    assert got == stage_times.Timing(
        setup=60,
        stages=[("steps_dataset", 123), ("prepare", 7), ("neuron_eval", 168)],
        skipped=["report"],
        total=358,
    )
    table = stage_times.markdown(got).splitlines()
    assert table[2] == "| set-up (before the first stage) | 60 |"
    assert table[3:6] == [
        "| `steps_dataset` | 123 |",
        "| `prepare` | 7 |",
        "| `neuron_eval` | 168 |",
    ]
    assert table[-2:] == ["| skipped (unchanged) | `report` |", "| total | 358 (5 min 58 s) |"]
    with pytest.raises(ValueError, match="no output"):
        stage_times.stage_seconds([])


def test_lines_are_passed_through_and_stamped(monkeypatch, capsys) -> None:
    clock = iter([10.0, 12.5, 20.0])
    monkeypatch.setattr(stage_times.time, "time", lambda: next(clock))
    lines = "set-up\nRunning stage 'sweep':\ndone\n"
    got = list(stage_times.stamped(io.StringIO(lines)))
    assert got == [(10.0, "set-up"), (12.5, "Running stage 'sweep':"), (20.0, "done")]
    assert capsys.readouterr().out == lines  # the run's output still shows
    result = stage_times.stage_seconds(got)
    assert (result.setup, result.stages, result.total) == (2, [("sweep", 8)], 10)


REPRO_LOG = """100 + bash scripts/setup.sh
150 [     0 s] start   steps_dataset
150 [     0 s] start   transcoder
230 [    80 s] ran     steps_dataset in 80.1 s
230 [    80 s] start   stability
231 [    81 s] unchanged questions
383 [   233 s] ran     transcoder in 232.6 s
390 [   240 s] ran     stability in 9.4 s
400 Experiment A: ...
"""


def test_stage_seconds_of_stages_side_by_side() -> None:
    """steerpipe.repro's lines: each stage's own seconds (they overlap), set-up before the
    first start."""
    got = stage_times.stage_seconds(stage_times.from_log(REPRO_LOG))
    assert got == stage_times.Timing(
        setup=50,
        stages=[("steps_dataset", 80), ("transcoder", 233), ("stability", 9)],
        skipped=["questions"],
        total=300,
    )
