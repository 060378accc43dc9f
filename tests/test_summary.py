"""summary: the headline lines follow from the metrics files, whatever their values."""

from __future__ import annotations

import json
from pathlib import Path

from steerpipe.results.summary import summary


def _rate(count: int, n: int) -> dict[str, float | int]:
    return {"count": count, "n": n, "rate": count / n, "ci95_low": 0.01, "ci95_high": 0.99}


def _measures(count: int, clean: int, degenerate: int, n: int = 40) -> dict[str, object]:
    """A condition as the report writes it: the raw rate, with clean and degenerate inside."""
    return {**_rate(count, n), "clean": _rate(clean, n), "degenerate": _rate(degenerate, n)}


def _dose(name: str, coefficient: float, count: int, clean: int, degenerate: int) -> dict:
    point: dict[str, object] = {"condition": name, "coefficient": coefficient, **_rate(count, 40)}
    for pre, k in (("clean_", clean), ("degenerate_", degenerate)):
        point |= {pre + key: v for key, v in _rate(k, 40).items()}
    return point


MOVED = {"up": 0.6, "same": 0.3, "down": 0.1, "prompts": 10}


def _block(control: tuple[int, int], steered: tuple[int, int], difference: float) -> dict:
    level = {"prompts": 10, "difference": {"ci95_low": -0.025, "ci95_high": 0.3}, "moved": MOVED}
    return {
        "control": _rate(*control),
        "steered": _rate(*steered),
        "difference": difference,
        "fisher_p": 0.0123,
        "prompt_level": level | {"sign_flip_p": 0.0625},
    }


def test_summary_reads_both_experiments(tmp_path: Path) -> None:
    (tmp_path / "report").mkdir()
    (tmp_path / "neuron_report").mkdir()
    (tmp_path / "neurons").mkdir()
    against = {"clean": _block((16, 40), (6, 40), -0.25)}
    report = {
        "cell": {"layer": 7, "position": 3, "coefficient": 2.0},
        **_block((5, 40), (11, 40), 0.15),
        "clean": _block((4, 40), (6, 40), 0.05),
        "degenerate": _block((0, 40), (8, 40), 0.2),
        "controls": {"negated": _measures(2, 1, 3)},
        "baselines": {"instruction": _measures(20, 16, 2) | {"steered_against": against}},
        "kl": {
            "control": 0.0,
            "steered": 0.25,
            "negated": 0.125,
            "dose_3.0": 2.5,
            "dose_0.5": 0.0625,
        },
        "dose_response": {
            "negated": _dose("negated", -2.0, 2, 1, 3),
            "dose_3.0": _dose("dose_3.0", 3.0, 9, 0, 30),
            "control": _dose("control", 0.0, 5, 4, 0),
            "dose_0.5": _dose("dose_0.5", 0.5, 7, 7, 1) | {"clean_moved": MOVED},
        },
        "sweep": {
            "samples": 480,
            "best_clean": {"layer": 7, "position": 3, "coefficient": 0.5, "rate": 0.5},
            "best_judged": {"layer": 9, "position": 1, "coefficient": 2.0, "rate": 1.0},
            "best_logprob": {"layer": 9, "position": 0, "score": 1.5},
            "best_logprob_clean": {"layer": 9, "position": 0, "coefficient": 1.0}
            | {"pooled_rate": 0.25, "pooled_samples": 12},
            "rank_correlation": {"spearman": 0.4567, "p": 0.01, "n": 40},
        },
    }
    (tmp_path / "report" / "metrics.json").write_text(json.dumps(report))
    change = {"mean": -0.25, "ci95_low": -0.5, "ci95_high": 0.0625, "sign_flip_p": 0.0312}
    change["mean_abs"] = 0.375
    conditions = {
        "base": {"accuracy": _rate(30, 64), "answer_changed_rate": 0.0, "balanced_accuracy": 0.5}
        | {"kl": 0.0},
        "reasoning@3x2": {"accuracy": _rate(28, 64), "answer_changed_rate": 0.125}
        | {"paired_with_base": {"margin_change": change}, "kl": 0.0123},
    }
    b = {"conditions": conditions, "majority_baseline": 0.5, "yes_rate": 0.5}
    (tmp_path / "neuron_report" / "metrics.json").write_text(json.dumps(b))
    neurons = {"layer_3": {"reasoning": 12, "memory": 34}}
    (tmp_path / "neurons" / "metrics.json").write_text(json.dumps(neurons))
    lines = summary(tmp_path).splitlines()
    assert lines[0].startswith("Experiment A: steering at layer 7, position 3, coefficient 2 ")
    # clean first, then the raw count and the degenerate count
    # then the share of prompts moved (clean) and the KL on neutral text
    assert "| control | 4/40 | 5/40 | 0/40 | 0.100 (0.010 - 0.990) |  | 0.000 |" in lines
    moved = "0.60 / 0.30 / 0.10"
    assert f"| steered | 6/40 | 11/40 | 8/40 | 0.150 (0.010 - 0.990) | {moved} | 0.250 |" in lines
    assert "| negated | 1/40 | 2/40 | 3/40 | 0.025 (0.010 - 0.990) |  | 0.125 |" in lines
    # a baseline adds no vector: no KL
    assert (
        "| instruction (baseline) | 16/40 | 20/40 | 2/40 | 0.400 (0.010 - 0.990) |  |  |" in lines
    )
    doses = [line for line in lines if "(dose)" in line]
    assert doses == [
        f"| x0.5 (dose) | 7/40 | 7/40 | 1/40 | 0.175 (0.010 - 0.990) | {moved} | 0.062 |",
        "| x3 (dose) | 0/40 | 9/40 | 30/40 | 0.000 (0.010 - 0.990) |  | 2.500 |",
    ]
    assert not any(line.startswith("| x-2 ") for line in lines)  # the negated one is a control
    tests = [line for line in lines if "sign-flip" in line]
    assert tests[0] == (
        "Clean: steered - control +0.050, 95% interval -0.025 to +0.300 over 10 prompts, "
        "sign-flip p = 0.062; per sample, Fisher p = 0.012"
    )
    assert tests[1].startswith("Raw: steered - control +0.150,")
    assert tests[2].startswith("Degenerate: steered - control +0.200,")
    assert tests[3] == (
        "Clean: steered - instruction baseline -0.250, 95% interval -0.025 to +0.300 over 10 "
        "prompts, sign-flip p = 0.062; per sample, Fisher p = 0.012"
    )
    assert (
        "Sweep choice (logprob score, then the clean rate of the best cells pooled): layer 9, "
        "position 0, coefficient 1 (0.25 clean over 12 samples)"
    ) in lines
    assert (
        "Sweep (480 samples): the clean rate picks layer 7, position 3, coefficient 0.5; the raw "
        "rate layer 9, position 1, coefficient 2; the logprob score layer 9, position 0; "
        "Spearman's rho of raw and logprob over the grid +0.46"
    ) in lines
    assert any(line.endswith("(layer 3: 12 reasoning, 34 memory)") for line in lines)
    assert "| base | 30/64 | 0.000 |  |  |  | 0.0000 |" in lines
    assert (
        "| reasoning@3x2 | 28/64 | 0.125 | -0.250 (-0.500 to +0.062) | 0.031 | 0.375 | 0.0123 |"
    ) in lines
    assert (
        "Base accuracy 0.469 (balanced 0.500); always giving the more frequent answer scores "
        "0.500 (50% of the answers are Yes)"
    ) in lines


def test_summary_reads_the_full_solutions(tmp_path: Path) -> None:
    (tmp_path / "solve_report").mkdir()
    control = {"coefficient": 0.0, "accuracy": _rate(3, 32), "mean_tokens": 101.25}
    control |= {"degenerate": 1, "degenerate_to_limit": 0}
    steered = {"coefficient": 1.0, "accuracy": _rate(1, 32), "mean_tokens": 60.0}
    steered |= {"degenerate": 25, "degenerate_to_limit": 20}
    against = {"accuracy_difference": -0.0625, "mcnemar_p": 0.5, "tokens_difference": -41.25}
    report = {
        "problems": 16,
        "samples": 2,
        "max_new_tokens": 256,
        "cell": {"layer": 15, "position": 1},
        "conditions": {
            "dose_1.0": steered
            | {"with_conclusion": 20, "against_control": against, "against_instruction": against},
            "control": control | {"with_conclusion": 12},
            "instruction": control | {"with_conclusion": 14, "against_control": against},
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
        "| 0 | 3/32 | 101.2 | 12/32 | 1 (0) |  |",
        "| 1 | 1/32 | 60.0 | 20/32 | 25 (20) | -0.062 (McNemar p = 0.5), -41.2 |",
    ]
    assert (
        "| instruction (baseline) | 3/32 | 101.2 | 14/32 | 1 (0) "
        "| -0.062 (McNemar p = 0.5), -41.2 |"
    ) in lines
    assert (
        "x1 against the instruction baseline: accuracy -0.062 (McNemar p = 0.5), tokens -41.2"
    ) in lines


def test_summary_without_results(tmp_path: Path) -> None:
    assert summary(tmp_path) == f"no results under {tmp_path}/ yet: run dvc repro"


def test_summary_reads_the_side_effects(tmp_path: Path) -> None:
    (tmp_path / "side_effects").mkdir()
    change = {"mean": -0.125, "ci95_low": -0.25, "ci95_high": 0.0625, "sign_flip_p": 0.0312}
    report = {
        "cell": {"layer": 12, "position": 1, "coefficient": 0.5},
        "questions": 128,
        "style": "basic",
        "accuracy_plain": 0.5,
        "accuracy_steered": 0.4375,
        "mcnemar_p": 0.125,
        "margin_change": change | {"mean_abs": 0.375},
        "margin_change_by_answer": {"yes": 0.25, "no": -0.5},
    }
    (tmp_path / "side_effects" / "metrics.json").write_text(json.dumps(report))
    assert summary(tmp_path).splitlines()[0] == (
        "Side effect on experiment B's 128 Yes/No questions (basic prompt) of the vector at "
        "layer 12, position 1, coefficient 0.5: answer margin -0.125 (95% over questions "
        "-0.250 to +0.062, sign-flip p = 0.031; mean absolute change 0.375); accuracy 0.500 "
        "-> 0.438 (McNemar p = 0.12); on the Yes questions +0.250; on the No questions -0.500"
    )
