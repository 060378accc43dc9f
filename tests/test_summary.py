"""summary: the headline lines follow from the metrics files, whatever their values."""

from __future__ import annotations

import json
from pathlib import Path

from steerpipe.results.summary import summary


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


def test_summary_reads_the_full_solutions(tmp_path: Path) -> None:
    (tmp_path / "solve_report").mkdir()
    control = {"coefficient": 0.0, "accuracy": _rate(3, 32), "mean_tokens": 101.25}
    steered = {"coefficient": 1.0, "accuracy": _rate(1, 32), "mean_tokens": 60.0}
    against = {"accuracy_difference": -0.0625, "mcnemar_p": 0.5, "tokens_difference": -41.25}
    report = {
        "problems": 16,
        "samples": 2,
        "max_new_tokens": 256,
        "cell": {"layer": 15, "position": 1},
        "conditions": {
            "dose_1.0": steered | {"with_conclusion": 20, "against_control": against},
            "control": control | {"with_conclusion": 12},
        },
    }
    (tmp_path / "solve_report" / "metrics.json").write_text(json.dumps(report))
    lines = summary(tmp_path).splitlines()
    assert lines[0] == (
        "Full solutions: 16 held-out problems x 2 samples, up to 256 tokens, the vector at "
        "layer 15, position 1"
    )
    rows = [line for line in lines if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert rows == [
        "| 0 | 3/32 | 101.2 | 12/32 |  |",
        "| 1 | 1/32 | 60.0 | 20/32 | -0.062 (McNemar p = 0.5), -41.2 |",
    ]


def test_summary_without_results(tmp_path: Path) -> None:
    assert summary(tmp_path) == f"no results under {tmp_path}/ yet: run dvc repro"
