"""The DVC pipeline end to end on the tiny pipeline (``pipeline_repo``): its outputs, caching,
what an edit re-runs, another CPU's kernels, and bad input failing with a clear message.

The tests share one repository; each starts from its first commit (the ``repo`` fixture in
conftest), so they pass in any order. ``test_pipeline_experiments`` holds the sweeps, the
queue and the Claude backend.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from pipeline_repo import ALL, EXPERIMENT_B, ran, restore, run, run_stage, set_params
from test_cross_layer import _raw, write_circuit_tracer_clt
from tiny import synthetic_rows

from steerpipe.steering.steps import SCHEMA

pytestmark = pytest.mark.slow


def test_outputs_and_metrics(repo: Path) -> None:
    from steerpipe.stats import fisher_p, sign_flip_p

    metrics = json.loads((repo / "data/report/metrics.json").read_text())
    control, steered = metrics["control"], metrics["steered"]
    assert control["n"] == steered["n"] == 3 * 2
    # the report's statistics follow from its own counts
    want_p = fisher_p(steered["count"], steered["n"], control["count"], control["n"])
    assert metrics["fisher_p"] == pytest.approx(want_p)
    assert metrics["difference"] == pytest.approx(steered["rate"] - control["rate"])
    assert steered["count"] == steered["categories"]["concluding"]
    # the controls at the same cell, each compared with control as steered is
    controls = metrics["controls"]
    assert set(controls) == {"negated", "random_0", "random_1"}
    for c in controls.values():
        assert c["n"] == 6 and c["prompt_level"]["prompts"] == 3
        assert c["fisher_p"] == pytest.approx(fisher_p(c["count"], 6, control["count"], 6))
    # per prompt: 3 prompts, each steered and unsteered; the test on their differences
    judged = pq.read_table(repo / "data/steer/judged.parquet").to_pylist()
    rate = {
        (c, k): sum(r["category"] == 1 for r in judged if (r["condition"], r["row"]) == (c, k)) / 2
        for c in ("control", "steered")
        for k in {r["row"] for r in judged}
    }
    diffs = [rate["steered", k] - rate["control", k] for k in sorted({k for _, k in rate})]
    level = metrics["prompt_level"]
    assert level["prompts"] == 3
    assert level["sign_flip_p"] == pytest.approx(sign_flip_p(diffs, seed=0, n_resamples=100_000))
    assert (repo / "data/report/sweep.png").read_bytes()[:4] == b"\x89PNG"
    # dose-response: control at 0, negated, steered and the dose, by coefficient
    # keyed by condition (dvc exp show drops a metric that is a list), in order of coefficient
    dose = sorted(metrics["dose_response"].values(), key=lambda q: q["coefficient"])
    assert [(q["condition"], q["coefficient"]) for q in dose] == [
        ("negated", -1.0),
        ("control", 0.0),
        ("steered", 1.0),
        ("dose_2.0", 2.0),
    ]
    for q in dose:
        rows = [r for r in judged if r["condition"] == q["condition"]]
        assert (q["count"], q["n"]) == (sum(r["category"] == 1 for r in rows), 6)
        assert q["prompt_ci95_low"] <= q["rate"] <= q["prompt_ci95_high"]
    assert dose[1]["vector_norm"] == 0.0 and "sign_flip_p" not in dose[1]
    negated = metrics["controls"]["negated"]["prompt_level"]["sign_flip_p"]
    assert dose[0]["sign_flip_p"] == negated and 0 < dose[3]["sign_flip_p"] <= 1
    with open(repo / "data/report/dose.csv") as f:
        table = list(csv.DictReader(f))
    assert [float(t["coefficient"]) for t in table] == [-1.0, 0.0, 1.0, 2.0]
    assert [float(t["concluding_rate"]) for t in table] == [q["rate"] for q in dose]
    assert (repo / "data/report/dose.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((repo / "data/prepare/metrics.json").read_text())["conclusion"]["test"] == 4
    # steer reports on the held-out prompts the sweep did not choose on
    swept = {r["row"] for r in pq.read_table(repo / "data/sweep/judged.parquet").to_pylist()}
    assert len(swept) == 1 and not swept & {r["row"] for r in judged}


def test_baselines_kl_and_the_share_of_prompts_moved(repo: Path, tokenizer) -> None:
    """The prompting baselines run on steer's prompts beside control, and the instruction
    baseline beside control's solutions; every vector has its KL on neutral text, control's
    0; every condition has its share of prompts moved."""
    metrics = json.loads((repo / "data/report/metrics.json").read_text())
    judged = pq.read_table(repo / "data/steer/judged.parquet").to_pylist()
    baselines = metrics["baselines"]
    assert set(baselines) == {"instruction", "prefill"}
    assert "instruction" not in metrics["controls"]
    for name, b in baselines.items():
        rows = [r for r in judged if r["condition"] == name]
        assert b["n"] == len(rows) == 6 and b["clean"]["count"] == sum(r["clean"] for r in rows)
        against = b["steered_against"]["clean"]
        assert against["difference"] == pytest.approx(
            metrics["clean"]["steered"]["rate"] - b["clean"]["rate"]
        )
        assert against["prompt_level"]["prompts"] == 3
        assert all(r["kl"] is None and r["vector_norm"] == 0.0 for r in rows)
    # the prefill: the conclusion steps' most frequent opening, then what the model wrote
    examples = pq.read_table(repo / "data/prepare/examples.parquet").to_pylist()
    train = [e for e in examples if (e["kind"], e["split"]) == ("conclusion", "train")]
    firsts = Counter(tuple(e["step_ids"][:3]) for e in train)
    opener = tokenizer.decode(list(firsts.most_common(1)[0][0]))
    assert all(r["text"].startswith(opener) for r in judged if r["condition"] == "prefill")
    kl = metrics["kl"]
    assert kl["control"] == 0.0 and set(kl) == {r["condition"] for r in judged} - set(baselines)
    assert kl["steered"] > 0 and kl["dose_2.0"] > 0
    assert metrics["dose_response"]["steered"]["kl"] == kl["steered"]
    # no budget, no KL of the grid
    assert pq.read_table(repo / "data/sweep_kl/kl.parquet").num_rows == 0
    assert "kl" not in metrics["sweep"]["best_clean"]
    # the share of prompts each condition moved, against control
    levels = [metrics["clean"]["prompt_level"], metrics["controls"]["negated"]["clean"]]
    levels += [baselines["prefill"]["clean"]["prompt_level"]]
    for shares in (levels[0]["moved"], levels[1]["prompt_level"]["moved"], levels[2]["moved"]):
        assert shares["prompts"] == 3
        assert shares["up"] + shares["same"] + shares["down"] == pytest.approx(1.0)
    with open(repo / "data/report/spread.csv") as f:
        spread = list(csv.DictReader(f))
    assert len(spread) == 3 * (len(kl) - 1 + len(baselines))  # every condition but control
    # the solutions: the instruction baseline against control, and the dose against it
    solved = json.loads((repo / "data/solve_report/metrics.json").read_text())["conditions"]
    assert solved["instruction"]["accuracy"]["n"] == solved["control"]["accuracy"]["n"] == 4
    assert "against_control" in solved["instruction"]
    assert solved["dose_2.0"]["against_instruction"]["tokens_difference"] == pytest.approx(
        solved["dose_2.0"]["mean_tokens"] - solved["instruction"]["mean_tokens"]
    )


def test_changing_only_the_kl_budget_reruns_only_its_readers(repo: Path) -> None:
    from steerpipe.config import load
    from steerpipe.steering.steer import SteerParams, steer_vector
    from steerpipe.steering.sweep import SweepParams
    from steerpipe.storage import read_parquet, read_tensors

    before = json.loads((repo / "data/report/metrics.json").read_text())
    # a budget nothing exceeds: the grid's KL, the same choice and the same samples
    set_params(repo, sweep__kl_max=1e9)
    proc = run(repo, "dvc", "repro")
    # the readers of sweep.kl_max, and the report, which reads the grid's KL
    assert ran(proc) == {"sweep_kl", "steer", "solve_steered", "side_effects", "report"}
    metrics = json.loads((repo / "data/report/metrics.json").read_text())
    assert metrics["cell"] == before["cell"] and metrics["clean"] == before["clean"]
    grid = read_parquet(repo / "data/sweep_kl/kl.parquet")
    assert len(grid) == 2 * 2 * 2  # layers x positions x coefficients
    at = {(g["layer"], g["position"], g["coefficient"]): g["kl"] for g in grid}
    # the grid's KL at steer's choice is the steer stage's KL of steered (other batches)
    cell = metrics["cell"]
    steered_at = at[cell["layer"], cell["position"], cell["coefficient"]]
    assert steered_at == pytest.approx(metrics["kl"]["steered"], abs=2e-4)
    best = metrics["sweep"]["best_clean"]
    assert best["kl"] == at[best["layer"], best["position"], best["coefficient"]]
    # a budget only the least KL meets: the stages' choice (steer_vector, on their inputs)
    least = min(grid, key=lambda g: g["kl"])
    steer = load(SteerParams, repo / "params.yaml")
    budget = dataclasses.replace(load(SweepParams, repo / "params.yaml"), kl_max=least["kl"])
    layer, pos, c, _, _ = steer_vector(
        *read_tensors(repo / "data/vectors/vectors.safetensors"),
        layer=steer.layer,
        position=steer.position,
        coefficient=steer.coefficient,
        scale=steer.scale,
        sweep=budget,
        judged=read_parquet(repo / "data/sweep/judged.parquet"),
        scores=read_parquet(repo / "data/sweep_logprob/scores.parquet"),
        kl=grid,
    )
    assert (layer, pos, c) == (least["layer"], least["position"], least["coefficient"])
    restore(repo)


def test_clean_and_degenerate_follow_the_judged_samples(repo: Path) -> None:
    """Every sample carries its measures, degenerate and clean; the report's clean and
    degenerate counts are those of the samples; the samples file shows drawn prompts."""
    judged = pq.read_table(repo / "data/steer/judged.parquet").to_pylist()
    for r in judged:
        assert r["clean"] == (r["category"] == 1 and not r["degenerate"])
        assert r["degenerate"] == bool(r["degenerate_reasons"])
        assert r["nll"] > 0 and 1 <= r["new_tokens"] <= 4
    metrics = json.loads((repo / "data/report/metrics.json").read_text())
    for measure in ("clean", "degenerate"):
        for name in ("control", "steered"):
            rows = [r for r in judged if r["condition"] == name]
            got = metrics[measure][name]
            assert (got["count"], got["n"]) == (sum(r[measure] for r in rows), len(rows))
        negated = [r for r in judged if r["condition"] == "negated"]
        assert metrics["controls"]["negated"][measure]["count"] == sum(r[measure] for r in negated)
    stats = json.loads((repo / "data/steer/judge.json").read_text())
    assert stats["degenerate"] == sum(r["degenerate"] for r in judged)
    samples = (repo / "data/report/samples.md").read_text()
    prompts = [line for line in samples.splitlines() if line.startswith("## prompt (row, step)")]
    assert len(prompts) == 3  # stats.samples 6, and steer has 3 prompts
    assert samples.count("| control |") == 3 * 2 and samples.count("| steered |") == 3 * 2


def test_changing_only_the_degenerate_thresholds_reruns_only_their_readers(repo: Path) -> None:
    # the tiny pipeline's texts are a few tokens: under 200 bytes, so the compression
    # threshold decides nothing, and every output of the readers comes out the same
    set_params(repo, quality__max_compression=9.0)
    proc = run(repo, "dvc", "repro")
    assert ran(proc) == {"judge@sweep", "judge@steer", "solve_report"}
    # a threshold that does decide: every sample is now degenerate, nothing clean
    set_params(repo, quality__max_nll=1e-6)
    run(repo, "dvc", "repro")
    metrics = json.loads((repo / "data/report/metrics.json").read_text())
    assert (
        metrics["degenerate"]["control"]["rate"] == 1.0
        and metrics["clean"]["steered"]["count"] == 0
    )
    solved = json.loads((repo / "data/solve_report/metrics.json").read_text())["conditions"]
    assert all(c["degenerate"] == c["accuracy"]["n"] for c in solved.values())
    restore(repo)


def test_resid_norms_and_steer_scale_norm(repo: Path) -> None:
    """The vectors' metadata holds each layer's mean residual norm over every training row and
    position; with ``steer.scale: norm`` (the tiny pipeline's), coefficient 1 adds that much."""
    from safetensors.torch import load_file

    from steerpipe.storage import read_tensors

    _, meta = read_tensors(repo / "data/vectors/vectors.safetensors")
    rows = torch.cat(
        [
            load_file(repo / f"data/activations/{kind}.safetensors")["resid_pre"].double()
            for kind in ("conclusion", "verification")
        ]
    )  # [rows, layers, positions, d_model]
    want = rows.norm(dim=-1).mean(dim=(0, 2))
    assert meta["resid_norms"] == pytest.approx(want.tolist(), abs=1e-4)  # stored to 4 places
    judged = pq.read_table(repo / "data/steer/judged.parquet").to_pylist()
    layer = judged[0]["layer"]
    norm = meta["resid_norms"][meta["layers"].index(layer)]
    by = {r["condition"]: r["vector_norm"] for r in judged}
    assert by["control"] == 0.0
    for name, c in [("steered", 1.0), ("negated", 1.0), ("random_0", 1.0), ("dose_2.0", 2.0)]:
        assert by[name] == pytest.approx(c * norm, abs=2e-4), name  # both stored to 4 places


def test_experiment_b_outputs(repo: Path) -> None:
    from steerpipe.stats import mcnemar_p

    counts = json.loads((repo / "data/neurons/metrics.json").read_text())["layer_1"]
    assert counts["features"] == 32
    assert counts["reasoning"] + counts["memory"] == counts["alive"] <= 32
    report = json.loads((repo / "data/neuron_report/metrics.json").read_text())
    conditions = report["conditions"]
    names = {f"{s}@1x{x}" for s in ("reasoning", "memory", "matched") for x in ("0.5", "1", "2")}
    assert set(conditions) == {"base"} | names
    assert all(c["accuracy"]["n"] == 6 for c in conditions.values())
    # strength 1.0 adds exactly nothing: the same text as the unhooked model, in the pipeline
    assert conditions["reasoning@1x1"]["text_changed_rate"] == 0
    assert conditions["memory@1x1"]["text_changed_rate"] == 0
    # ... and the same answer margins; the balanced questions: 3 Yes, 3 No
    rows = pq.read_table(repo / "data/neuron_eval/generations.parquet").to_pylist()
    base = {r["id"]: r["margin"] for r in rows if r["condition"] == "base"}
    same = [r for r in rows if r["condition"] == "reasoning@1x1"]
    # (to the float differences of the batches they share: left padding of other lengths)
    assert [r["margin"] for r in same] == pytest.approx([base[r["id"]] for r in same], abs=1e-3)
    change = conditions["reasoning@1x1"]["paired_with_base"]["margin_change"]["mean"]
    assert change == pytest.approx(0, abs=1e-3)
    assert report["yes_rate"] == 0.5 and report["majority_baseline"] == 0.5
    assert conditions["memory@1x2"]["n_features"] == conditions["reasoning@1x2"]["n_features"]
    # the matched control: as many features, its total mean activation over the traces as the
    # masks file gives it, and the report's numbers are those of its features
    from steerpipe.storage import read_tensors

    match = json.loads((repo / "data/neuron_eval/matched.json").read_text())["layer_1"]
    assert match["features"] == conditions["matched@1x2"]["n_features"]
    masks, _ = read_tensors(repo / "data/neurons/layers/layer_1.safetensors")
    reasoning_total = float(masks["mean.all"][masks["reasoning"]].double().sum())
    assert match["target_total_mean"] == pytest.approx(reasoning_total)
    want_within = abs(match["relative_gap"]) <= match["tolerance"]
    assert match["within_tolerance"] == want_within
    assert (repo / "data/neuron_report/accuracy.png").read_bytes()[:4] == b"\x89PNG"
    rows = pq.read_table(repo / "data/neuron_eval/generations.parquet").to_pylist()
    assert len(rows) == 10 * 6 and not any(r["generation"].startswith("Question") for r in rows)
    # each condition paired with base on the same questions: the discordant pairs and McNemar
    base = {r["id"]: r["correct"] for r in rows if r["condition"] == "base"}
    for name in names:
        mine = [(r["correct"], base[r["id"]]) for r in rows if r["condition"] == name]
        pair = conditions[name]["paired_with_base"]
        only_base = sum(b and not c for c, b in mine)
        only_mine = sum(c and not b for c, b in mine)
        assert (pair["right_under_base_only"], pair["right_under_condition_only"]) == (
            only_base,
            only_mine,
        )
        assert pair["mcnemar_p"] == mcnemar_p(only_mine, only_base)
        assert pair["accuracy_difference"] == pytest.approx((only_mine - only_base) / 6)
    traced = {r["id"] for r in pq.read_table(repo / "data/questions/trace.parquet").to_pylist()}
    assert traced and not traced & {r["id"] for r in rows}
    fidelity = json.loads((repo / "data/traces/metrics.json").read_text())["fidelity"]["layer_1"]
    assert fidelity["input_hook"] == "mlp.hook_in" and fidelity["tokens"] > 100


def test_second_repro_does_nothing(repo: Path) -> None:
    assert ran(run(repo, "dvc", "repro")) == set()


# Another x86-64 CPU, as far as the float bits go: ATen's AVX2 kernels and MKL's AVX2 code
# path, where this machine would take its own (AVX-512 on the CI machines). Thread counts do
# not change the bits (1 and 2 threads give identical forwards); instruction sets do.
OTHER_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
# What docs/pipeline.md ("Reproducibility") says may move on another CPU, per metrics file:
# the largest change of any number in it, relative to the number (or to 1 below 1); 0: identical.
TOLERANCE = {
    "data/vectors/metrics.json": 0,
    "data/report/metrics.json": 0,
    "data/solve_report/metrics.json": 0,
    "data/transcoder/metrics.json": 1e-3,
    "data/traces/metrics.json": 5e-3,
    "data/neurons/metrics.json": 1e-2,
    "data/neuron_report/metrics.json": 5e-2,
    "data/side_effects/metrics.json": 1e-3,
}


# in the report, the numbers computed in floats from the vectors or the model's logits rather
# than counted from samples: within 1e-3 (docs/pipeline.md)
FLOATS = ("logprob_score", "best_logprob.score", "vector_norm")


def leaves(tree: object, prefix: str = "") -> dict[str, object]:
    """Every value of a JSON tree by its path."""
    if isinstance(tree, list):
        tree = dict(enumerate(tree))
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in leaves(sub, f"{prefix}.{key}").items()
        }
    return {prefix: tree}


def differs(a: object, b: object, tolerance: float) -> bool:
    numeric = isinstance(a, int | float) and isinstance(b, int | float)
    if numeric:
        return abs(a - b) > tolerance * max(1.0, abs(a))  # type: ignore[operator, arg-type]
    return a != b


def test_another_cpus_kernels_agree_within_the_stated_tolerance(repo: Path) -> None:
    from steerpipe.stats import mcnemar_p

    before = {path: leaves(json.loads((repo / path).read_text())) for path in TOLERANCE}
    texts = pq.read_table(repo / "data/steer/judged.parquet").column("text").to_pylist()
    # every stage with float work on the model, and what follows it (the tiny pipeline's
    # steps come from a file and its questions from reasoning-gym: no model runs there)
    targets = ("stability", "activations", "transcoder", "solve_control")
    proc = run(repo, "dvc", "repro", "-f", "--downstream", *targets, env=OTHER_CPU)
    assert ran(proc) == ALL - {"steps_dataset", "questions", "solve_problems"}
    for path, tolerance in TOLERANCE.items():
        after = leaves(json.loads((repo / path).read_text()))
        assert set(after) == set(before[path]), path
        moved = {
            k: (v, after[k])
            for k, v in before[path].items()
            if differs(v, after[k], 1e-3 if any(f in k for f in FLOATS) else tolerance)
            and ".paired_with_base." not in k
        }
        assert not moved, (path, moved)
    # the paired comparisons follow the answers that move (docs/pipeline.md): each condition's
    # test and difference are those of its discordant counts
    for pair in (
        c.get("paired_with_base")
        for c in json.loads((repo / "data/neuron_report/metrics.json").read_text())[
            "conditions"
        ].values()
    ):
        if pair:
            only_base, only_mine = pair["right_under_base_only"], pair["right_under_condition_only"]
            assert pair["mcnemar_p"] == mcnemar_p(only_mine, only_base)
            assert pair["accuracy_difference"] == pytest.approx((only_mine - only_base) / 6)
    assert pq.read_table(repo / "data/steer/judged.parquet").column("text").to_pylist() == texts


def test_sweep_metric_logprob_reruns_only_the_choice_and_after(repo: Path) -> None:
    """``sweep.metric`` is read only where the cell is chosen: neither sweep re-runs, and
    steer's auto cell becomes the best logprob score."""
    from steerpipe.steering.sweep import best_scored_cell

    scores = pq.read_table(repo / "data/sweep_logprob/scores.parquet").to_pylist()
    assert {(r["layer"], r["position"]) for r in scores} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    metrics = json.loads((repo / "data/report/metrics.json").read_text())["sweep"]
    best = best_scored_cell(scores)
    assert (metrics["best_logprob"]["layer"], metrics["best_logprob"]["position"]) == best
    with open(repo / "data/report/sweep.csv") as f:
        table = [r for r in csv.DictReader(f) if float(r["coefficient"]) == 1.0]
    assert {(int(r["layer"]), int(r["position"])): float(r["logprob_score"]) for r in table} == {
        (r["layer"], r["position"]): pytest.approx(r["score"]) for r in scores
    }
    set_params(repo, sweep__metric="logprob")
    proc = run(repo, "dvc", "repro")
    # steer and solve_steered choose again; what reads their samples re-runs where they changed
    # (on the tiny model the clean metric's tie-break may land on the same cell already)
    assert {"steer", "solve_steered", "side_effects"} <= ran(proc)
    assert ran(proc) <= {
        "steer", "judge@steer", "report", "solve_steered", "solve_report", "side_effects"
    }  # fmt: skip
    judged = pq.read_table(repo / "data/steer/judged.parquet").to_pylist()
    assert {(r["layer"], r["position"]) for r in judged} == {best}
    restore(repo)


def test_solve_scores_and_a_new_coefficient_keeps_the_control_solutions(repo: Path) -> None:
    """The solve stages end to end: the report's numbers follow from the scored solutions,
    control and steered solutions are paired, and changing only the coefficients re-runs the
    steered solutions and the report, not the control solutions."""
    scored = pq.read_table(repo / "data/solve_report/scored.parquet").to_pylist()
    metrics = json.loads((repo / "data/solve_report/metrics.json").read_text())
    conditions = metrics["conditions"]
    assert set(conditions) == {"control", "instruction", "dose_2.0"} and metrics["problems"] == 2
    assert (
        conditions["dose_2.0"]["coefficient"] == 2.0 and conditions["control"]["coefficient"] == 0
    )
    for name, c in conditions.items():
        rows = [r for r in scored if r["condition"] == name]
        assert c["accuracy"]["n"] == len(rows) == 2 * 2
        assert c["accuracy"]["count"] == sum(r["correct"] for r in rows)
        assert c["mean_tokens"] == pytest.approx(sum(r["n_tokens"] for r in rows) / 4)
        assert all(r["n_tokens"] <= 4 for r in rows)
    pairs = {(r["problem"], r["sample"]) for r in scored if r["condition"] == "control"}
    for name in ("dose_2.0", "instruction"):
        assert pairs == {(r["problem"], r["sample"]) for r in scored if r["condition"] == name}
    vectors = (repo / "data/vectors/vectors.safetensors").read_bytes()
    control = (repo / "data/solve_control/solutions.parquet").read_bytes()
    set_params(repo, solve__coefficients=[0.5, 2.0])
    proc = run(repo, "dvc", "repro")
    assert ran(proc) == {"solve_steered", "solve_report"}
    assert (repo / "data/solve_control/solutions.parquet").read_bytes() == control
    assert (repo / "data/vectors/vectors.safetensors").read_bytes() == vectors
    metrics = json.loads((repo / "data/solve_report/metrics.json").read_text())
    assert set(metrics["conditions"]) == {"control", "instruction", "dose_0.5", "dose_2.0"}
    with open(repo / "data/solve_report/dose.csv") as f:  # the baseline is no dose
        assert [float(r["coefficient"]) for r in csv.DictReader(f)] == [0.0, 0.5, 2.0]
    restore(repo)


def test_solve_bad_input_is_named(repo: Path) -> None:
    set_params(repo, solve__problems__task="no_such_task")
    proc = run_stage(repo, "solve_problems")
    assert proc.returncode == 1
    assert "error: solve.problems.task 'no_such_task'" in proc.stderr
    set_params(repo, solve__problems__task="gsm_symbolic", solve__coefficients=[0.0])
    proc = run_stage(repo, "solve_steered")
    assert proc.returncode == 1 and "solve.coefficients must be non-zero" in proc.stderr
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_editing_a_stage_reruns_it_and_downstream(repo: Path) -> None:
    path = repo / "stages/steer.py"
    source = path.read_text()
    assert "seed=p.seed," in source
    path.write_text(source.replace("seed=p.seed,", "seed=p.seed + 1,", 1))
    proc = run(repo, "dvc", "repro")
    # the stage and what reads its (now different) samples re-run; nothing upstream or beside
    assert ran(proc) == {"steer", "judge@steer", "report"}
    restore(repo)
    assert ran(run(repo, "dvc", "repro")) == set()


def test_editing_how_a_chooses_examples_leaves_b_up_to_date(repo: Path) -> None:
    module = "src/steerpipe/steering/prepare.py"
    path = repo / module
    path.write_text(path.read_text() + "\n# an edit\n")
    changed = set(json.loads(run(repo, "dvc", "status", "--json").stdout))
    assert "prepare" in changed
    assert not changed & (EXPERIMENT_B | {"transcoder"})
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert changed == {name for name, s in spec.items() if module in s.get("deps", [])}


def test_missing_transcoder_layer_fails_cleanly(repo: Path) -> None:
    set_params(repo, traces__layers=[2])
    proc = run_stage(repo, "traces")
    assert proc.returncode == 1
    assert "no transcoder for layer 2: data/transcoder/weights/layer_2.safetensors" in proc.stderr
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_fidelity_gate_stops_the_traces_and_writes_nothing(repo: Path) -> None:
    before = {p: p.read_bytes() for p in (repo / "data/traces").rglob("*") if p.is_file()}
    set_params(repo, traces__min_fve=0.99)
    proc = run_stage(repo, "traces")
    last = proc.stderr.strip().splitlines()[-1]  # one line, after any progress bars
    assert proc.returncode == 1 and last.startswith(
        "error: transcoder data/transcoder/weights/layer_1.safetensors (layer 1) read at "
        "mlp.hook_in (from metadata input_hook) explains"
    ), proc.stderr[-2000:]
    assert "below traces.min_fve=0.99" in last
    after = {p: p.read_bytes() for p in (repo / "data/traces").rglob("*") if p.is_file()}
    assert after == before
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_bad_layer_fails_cleanly(repo: Path) -> None:
    set_params(repo, steer__layer=99, steer__position=0)
    proc = run(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert "layer 99 has no vector" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (repo / "data/steer/generations.parquet").exists()
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_empty_after_filtering_fails_cleanly(repo: Path) -> None:
    set_params(repo, prepare__min_step_tokens=500)
    proc = run_stage(repo, "prepare")
    assert proc.returncode == 1
    # the labeller's count from the data set, then each filter's, each with its parameter
    rows = pq.read_table(repo / "data/steps/steps.parquet").to_pylist()
    labelled = sum(bool(r["conclusion_steps"]) for r in rows)
    assert labelled > 0
    message = " ".join(proc.stderr.split())
    assert "only 0 'conclusion' examples are left, and prepare.positive_test_size=4" in message
    assert f"found 'conclusion' steps in {labelled} of {len(rows)} problems" in message
    assert "steps.labeller=anthropic" in message
    assert f"Of those drawn, {labelled} had a step shorter than prepare.min_step_tokens=500" in (
        message
    )
    assert "and 0 a prompt longer than prepare.max_prompt_tokens=" in message
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_positive_test_size_0_gives_the_vector_every_positive_example(
    repo: Path, tmp_path: Path
) -> None:
    """No stage reads the positive kind's held-out examples; with 0 they all train, and the
    negative kind's split (the sweep's and steer's prompts) is the same."""
    before = pq.read_table(repo / "data/prepare/examples.parquet").to_pylist()
    set_params(repo, prepare__positive_test_size=0)
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["prepare"]["cmd"].split()
    out = tmp_path / "examples.parquet"  # beside the repository's outputs, which stay as they are
    cmd = [str(out) if c == "data/prepare/examples.parquet" else c for c in cmd]
    cmd = [str(tmp_path / "m.json") if c == "data/prepare/metrics.json" else c for c in cmd]
    run(repo, sys.executable, *cmd[1:])
    after = pq.read_table(out).to_pylist()
    run(repo, "git", "checkout", "-q", "--", "params.yaml")

    def of(rows: list[dict], kind: str, split: str | None = None) -> list[tuple[int, int]]:
        return [
            (e["row"], e["step"]) for e in rows if e["kind"] == kind and split in (None, e["split"])
        ]

    assert of(after, "verification") == of(before, "verification")
    assert [e["split"] for e in after if e["kind"] == "verification"] == [
        e["split"] for e in before if e["kind"] == "verification"
    ]
    assert of(after, "conclusion", "train") == of(before, "conclusion")
    assert of(after, "conclusion", "test") == [] and len(of(before, "conclusion", "test")) == 4


def test_a_param_of_the_wrong_type_is_named(repo: Path) -> None:
    set_params(repo, sweep__n_samples="two")
    proc = run_stage(repo, "sweep")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: sweep.n_samples must be an integer, got 'two'"


def test_row_missing_a_field_fails_cleanly(repo: Path) -> None:
    rows = synthetic_rows(4)
    rows[2]["steps"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), repo / "bad.parquet")
    set_params(repo, steps__source="bad.parquet")
    proc = run_stage(repo, "steps_dataset")
    assert proc.returncode == 1
    assert "row 2: missing field(s) steps" in proc.stderr
    run(repo, "git", "checkout", "-q", "--", "params.yaml")


def test_a_cross_layer_transcoder_runs_experiment_b(repo: Path, tmp_path: Path) -> None:
    """traces, neurons and neuron_eval on a cross-layer transcoder in circuit-tracer's layout:
    features by source layer, the gate at every layer they write to, and the neurons' x1.0
    rows (delta) the model itself."""
    write_circuit_tracer_clt(tmp_path / "clt", _raw())
    set_params(repo, traces__transcoders=str(tmp_path / "clt"), traces__layers=[1, 2])
    try:
        for name in ("traces", "neurons", "neuron_eval"):
            proc = run_stage(repo, name)
            assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = json.loads((repo / "data/traces/metrics.json").read_text())
        assert sorted(metrics["fidelity"]) == ["target_1", "target_2", "target_3"]
        rows = pq.read_table(repo / "data/neuron_eval/generations.parquet").to_pylist()
        assert {r["layer"] for r in rows} == {None, 1, 2}
        base = {r["id"]: r["generation"] for r in rows if r["condition"] == "base"}
        ones = [r for r in rows if r["strength"] == 1.0]
        assert ones and all(r["generation"] == base[r["id"]] for r in ones)
    finally:  # the outputs' folders have layer 2's files too: --force drops them
        run(repo, "git", "checkout", "-q", "--", ".")
        run(repo, "dvc", "checkout", "--force", "-q")
        assert run(repo, "dvc", "status", "--json").stdout.strip() == "{}"
