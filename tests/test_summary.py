"""summary: the headline lines follow from the metrics files, whatever their values."""

from __future__ import annotations

import json
from pathlib import Path

from steerpipe.summary import summary


def _rate(count: int, n: int) -> dict[str, float | int]:
    return {"count": count, "n": n, "rate": count / n, "ci95_low": 0.01, "ci95_high": 0.99}


def test_summary_reads_both_experiments(tmp_path: Path) -> None:
    (tmp_path / "report").mkdir()
    (tmp_path / "neuron_report").mkdir()
    (tmp_path / "neurons").mkdir()
    report = {
        "cell": {"layer": 7, "position": 3, "coefficient": 2.0},
        "control": _rate(5, 40),
        "steered": _rate(11, 40),
        "difference": 0.15,
        "fisher_p": 0.0123,
        "controls": {"negated": _rate(2, 40)},
        "dose_response": {
            "negated": {"condition": "negated", "coefficient": -2.0, **_rate(2, 40)},
            "dose_3.0": {"condition": "dose_3.0", "coefficient": 3.0, **_rate(9, 40)},
            "control": {"condition": "control", "coefficient": 0.0, **_rate(5, 40)},
            "dose_0.5": {"condition": "dose_0.5", "coefficient": 0.5, **_rate(7, 40)},
        },
        "sweep": {
            "best_layer": 7,
            "best_position": 3,
            "best_logprob_layer": 9,
            "best_logprob_position": 0,
            "rank_correlation": {"spearman": 0.4567, "p": 0.01, "n": 40},
        },
        "prompt_level": {
            "prompts": 10,
            "difference": {"ci95_low": -0.025, "ci95_high": 0.3},
            "sign_flip_p": 0.0625,
        },
    }
    (tmp_path / "report" / "metrics.json").write_text(json.dumps(report))
    conditions = {
        "base": {"accuracy": _rate(30, 64), "answer_changed_rate": 0.0},
        "reasoning@3x2": {"accuracy": _rate(28, 64), "answer_changed_rate": 0.125},
    }
    (tmp_path / "neuron_report" / "metrics.json").write_text(json.dumps({"conditions": conditions}))
    neurons = {"layer_3": {"reasoning": 12, "memory": 34}}
    (tmp_path / "neurons" / "metrics.json").write_text(json.dumps(neurons))
    lines = summary(tmp_path).splitlines()
    assert lines[0].startswith("Experiment A: steering at layer 7, position 3, coefficient 2 ")
    assert "| control | 5/40 | 0.125 | 0.010 - 0.990 |" in lines
    assert "| steered | 11/40 | 0.275 | 0.010 - 0.990 |" in lines
    assert "| negated | 2/40 | 0.050 | 0.010 - 0.990 |" in lines
    assert "Per sample, as the original: Fisher exact p = 0.012" in lines
    doses = [line for line in lines if "(dose)" in line]
    assert doses == [
        "| x0.5 (dose) | 7/40 | 0.175 | 0.010 - 0.990 |",
        "| x3 (dose) | 9/40 | 0.225 | 0.010 - 0.990 |",
    ]
    assert not any(line.startswith("| x-2 ") for line in lines)  # the negated one is a control
    assert (
        "Sweep: the judged rate picks layer 7, position 3; the logprob score layer 9, "
        "position 0; Spearman's rho over the grid +0.46"
    ) in lines
    assert (
        "Per prompt (10 prompts): difference +0.150, 95% interval -0.025 to +0.300 "
        "(bootstrap over prompts), sign-flip p = 0.062"
    ) in lines
    assert any(line.endswith("(layer 3: 12 reasoning, 34 memory)") for line in lines)
    assert "| reasoning@3x2 | 28/64 | 0.125 |" in lines


def test_summary_without_results(tmp_path: Path) -> None:
    assert summary(tmp_path) == f"no results under {tmp_path}/ yet: run dvc repro"
