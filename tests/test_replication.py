"""replication: the queued commands, and the table of three hand-made experiment records in
the nesting of ``dvc exp show --json`` (DVC 3: a revision's ``experiments``, each ``revs``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import ROOT

from steerpipe.results.replication import (
    SEEDS,
    experiments,
    main,
    pooled,
    queue_commands,
    report_path,
)


def report(diff: float, control: int, low: float, high: float, p: float) -> dict:
    steered = control + round(diff * 64)
    return {
        "cell": {"layer": 15, "position": 1, "coefficient": 1.0},
        "control": {"count": control, "n": 64},
        "steered": {"count": steered, "n": 64},
        "difference": diff,
        "prompt_level": {
            "prompts": 16,
            "difference": {"ci95_low": low, "ci95_high": high},
            "sign_flip_p": p,
        },
    }


def record(name: str, rep: dict | None) -> dict:
    metrics = {"data/report/metrics.json": {"data": rep}} if rep else {}  # as dvc.yaml says
    data = {"metrics": metrics, "params": {"params.yaml": {"data": {"steer": {"seed": 1}}}}}
    return {"rev": name * 4, "name": name, "data": data}


REPORT = "data/report/metrics.json"
CLEAN = report(0.125, 9, 0.0, 0.25, 0.05)
SHOWN = [
    {"rev": "workspace", "name": None, "data": {"metrics": {}}, "experiments": None},
    {
        "rev": "abc",
        "name": "main",
        # a commit's own row has a report too, but is not one of the experiments
        "data": {"metrics": {REPORT: {"data": report(0.9, 1, 0.8, 1.0, 1e-5)}}},
        "experiments": [
            # a report with the clean rate: its headline is the clean one
            {"revs": [record("seed-2", report(0.25, 10, 0.1, 0.4, 0.01) | {"clean": CLEAN})]},
            {"revs": [record("queued", None)]},  # no report yet
            {"revs": [record("coef-2", report(0.75, 10, 0.6, 0.9, 1e-4))]},  # another sweep
        ],
    },
    {
        "rev": "older",  # experiments queued before the last commit stay under theirs
        "name": None,
        "data": {"metrics": {REPORT: {"data": report(0.9, 1, 0.8, 1.0, 1e-5)}}},
        "experiments": [
            {"revs": [record("seed-1", report(0.5, 13, 0.3, 0.7, 1e-4))]},
            {"revs": [record("seed-3", report(0.125, 8, -0.05, 0.3, 0.2))]},
        ],
    },
]


def test_queue_sets_every_seed_per_experiment() -> None:
    (one, two) = queue_commands([3, 4])
    assert one[:6] == ["dvc", "exp", "run", "--queue", "-n", "seed-3"] and one[-1] == "report"
    assert [one[i + 1] for i, w in enumerate(one) if w == "-S"] == [f"{k}=3" for k in SEEDS]
    assert "steer.seed=4" in two


def test_pooled_is_a_t_interval_over_experiments() -> None:
    got = pooled([0.5, 0.25, 0.125])
    mean = 0.875 / 3
    sd = (((0.5 - mean) ** 2 + (0.25 - mean) ** 2 + (0.125 - mean) ** 2) / 2) ** 0.5
    half = 4.302652729911275 * sd / 3**0.5  # t(0.975, 2 df), the textbook 4.303
    assert got == pytest.approx(
        {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "sd": sd}
    )


def test_table_of_three_experiments(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the report's path comes from dvc.yaml
    assert report_path() == "data/report/metrics.json"
    names = [e["name"] for e in experiments(SHOWN, report_path())]
    assert names == ["coef-2", "seed-1", "seed-2", "seed-3"]
    assert [e["name"] for e in experiments(SHOWN, report_path(), prefix="seed")] == names[1:]
    (tmp_path / "shown.json").write_text(json.dumps(SHOWN))
    main(["table", "--json", str(tmp_path / "shown.json"), "--out", str(tmp_path / "out")])
    lines = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert (
        lines[2] == "| seed-1 | 15/1/1 | raw | 13/64 | 45/64 | +0.500 | +0.300 to +0.700 | 0.0001 |"
    )
    assert (
        lines[3] == "| seed-2 | 15/1/1 | clean | 9/64 | 17/64 | +0.125 | +0.000 to +0.250 | 0.05 |"
    )
    assert lines[4] == "| seed-3 | 15/1/1 | raw | 8/64 | 16/64 | +0.125 | -0.050 to +0.300 | 0.2 |"
    assert lines[5].startswith("| pooled (3 experiments) | | | | | +0.250 | ")
    assert (tmp_path / "out" / "forest.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.splitlines() == lines
