"""replication: the queued commands, and the table of three hand-made experiment records in
the nesting of ``dvc exp show --json`` (DVC 3: a revision's ``experiments``, each ``revs``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import ROOT

from steerpipe.results.replication import (
    SEEDS,
    choice_stability,
    experiments,
    main,
    pooled,
    queue_commands,
    report_path,
    rule_cells,
    stability_markdown,
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
RUNNING = {"metrics": {REPORT: {"data": CLEAN}}}
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
            # running: DVC shows the workspace's report under its name; it is left out
            {"revs": [record("seed-4", CLEAN) | {"data": {"rev": "workspace"} | RUNNING}]},
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
    # the hand-made reports carry only the choice made, the same in all three
    assert lines[7:] == [
        "How often the sweep's choice repeats:",
        "",
        "| rule | choices (layer/position/coefficient) | same cell | same cell or a neighbour "
        "| same layer |",
        "|---|---|---|---|---|",
        "| steered (the choice made) | 15/1/1, 15/1/1, 15/1/1 | 3 of 3 (15/1) "
        "| 3 of 3 (around 15/1) | 3 of 3 (15) |",
    ]
    assert (tmp_path / "out" / "forest.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.splitlines() == lines


LAYERS, POSITIONS = [3, 6, 9, 12, 15, 18, 21, 24], [0, 1, 2, 3, 4]


def test_choice_stability_counts_repeats_and_grid_neighbours() -> None:
    cells = [(15, 1), (12, 1), (15, 1), (3, 3), (18, 0)]
    got = choice_stability(cells, LAYERS, POSITIONS)
    assert (got["k"], got["distinct"], got["modal"], got["modal_count"]) == (5, 4, (15, 1), 2)
    # (18, 0) is a layer and a position away from (15, 1): two steps, not a neighbour; around
    # (12, 1) and (15, 1) alike three experiments lie, and the lower cell wins the tie
    assert (got["near"], got["near_count"]) == ((12, 1), 3)
    assert (got["layer"], got["layer_count"]) == (15, 2)
    apart = choice_stability([(3, 0), (9, 0), (15, 2), (21, 4), (24, 1)], LAYERS, POSITIONS)
    assert (apart["modal_count"], apart["near_count"], apart["layer_count"]) == (1, 1, 1)
    # a layer outside the grid is near only itself
    assert choice_stability([(7, 0), (6, 0)], LAYERS, POSITIONS)["near_count"] == 1


def test_rule_cells_read_each_rules_choice_from_the_reports() -> None:
    def rep(layer: int) -> dict:
        return {
            "cell": {"layer": layer, "position": 1, "coefficient": 0.5},
            "sweep": {
                "best_logprob_clean": {"layer": 15, "position": 1, "coefficient": 0.5},
                "best_clean": {"layer": layer, "position": 0, "coefficient": 1.0},
                "best_judged": {"layer": 3, "position": 0, "coefficient": 2.0},
                "best_logprob": {"layer": 15, "position": 1, "score": 3.0},
            },
        }

    found = rule_cells([rep(15), rep(21)])
    assert found["steered (the choice made)"] == [(15, 1, 0.5), (21, 1, 0.5)]
    assert found["logprob"] == [(15, 1, None), (15, 1, None)]
    assert rule_cells([rep(15), {"cell": rep(3)["cell"]}]).keys() == {"steered (the choice made)"}
    table = stability_markdown([rep(15), rep(21)], LAYERS, POSITIONS).splitlines()
    assert (
        table[3] == "| logprob_clean | 15/1/0.5, 15/1/0.5 | 2 of 2 (15/1) | 2 of 2 (around 15/1) "
        "| 2 of 2 (15) |"
    )
    assert table[4] == (
        "| clean | 15/0/1, 21/0/1 | 1 of 2 (15/0) | 1 of 2 (around 15/0) | 1 of 2 (15) |"
    )
    assert table[6] == (
        "| logprob | 15/1, 15/1 | 2 of 2 (15/1) | 2 of 2 (around 15/1) | 2 of 2 (15) |"
    )
