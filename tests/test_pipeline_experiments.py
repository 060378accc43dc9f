"""DVC experiments on the tiny pipeline (``pipeline_repo``): ``dvc exp run -S``, a queued
sweep, a new data file, and the Anthropic batch backend against a local fake server.

A repository of its own, so that these run beside ``test_pipeline`` under ``pytest -n 2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_batches import FakeServer, FakeState, rule_answer
from pipeline_repo import EXPERIMENT_B, experiment, ran, restore, run, run_queue, set_params

pytestmark = pytest.mark.slow


def test_boolq_file_reruns_only_experiment_b(repo: Path) -> None:
    rows = [
        {"question": f"is {i} even", "answer": i % 2 == 0, "passage": f"{i} is a number."}
        for i in range(12)
    ]
    pq.write_table(pa.Table.from_pylist(rows), repo / "boolq.parquet")
    set_params(repo, questions__source="boolq.parquet")
    # and experiment A's side effects, which score the same questions
    assert ran(run(repo, "dvc", "repro")) == EXPERIMENT_B | {"side_effects"}
    traces = pq.read_table(repo / "data/traces/traces.parquet").to_pylist()
    assert len(traces) == 3 * 4 and all(" even\nPassage: " in t["prompt"] for t in traces)
    set_params(repo, questions__n_eval=7)  # more evaluation questions: the traces stay cached
    changed = {"questions", "neuron_eval", "neuron_report", "side_effects"}
    assert ran(run(repo, "dvc", "repro")) == changed
    # the margin after each generation (margin_at answer): only the evaluation re-runs; the
    # tiny model states no answer, so every row reads it after its whole text and the cue
    set_params(repo, neuron_eval__margin_at="answer")
    assert ran(run(repo, "dvc", "repro")) == {"neuron_eval", "neuron_report"}
    rows = pq.read_table(repo / "data/neuron_eval/generations.parquet").to_pylist()
    assert all(r["parsed"] is None and r["margin_context"] >= 2 for r in rows)
    base = {r["id"]: r for r in rows if r["condition"] == "base"}
    for r in (r for r in rows if r["condition"] == "reasoning@1x1"):  # strength 1: base's text
        assert r["margin_context"] == base[r["id"]]["margin_context"]
        assert r["margin"] == pytest.approx(base[r["id"]]["margin"], abs=1e-3)


def test_exp_run_with_set_param(repo: Path) -> None:
    # a new steer cell re-runs steer, the steered solutions and the side effects (they take
    # steer's cell) and what follows them; nothing before steer, and not the control solutions
    proc = run(repo, "dvc", "exp", "run", "-S", "steer.layer=2", "-S", "steer.position=1")
    steered = {"steer", "judge@steer", "report", "solve_steered", "solve_report"}
    assert ran(proc) == steered | {"side_effects"}
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert "data/report/metrics.json" in text and "fisher_p" in text


def test_anthropic_backend_gives_the_same_metrics(repo: Path, tmp_path: Path) -> None:
    want = (repo / "data/report/metrics.json").read_text()
    server = FakeServer(FakeState(answer=rule_answer))
    env = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-ant-test-key"}
    try:
        set_params(
            repo,
            judge__backend="anthropic",
            judge__store=str(tmp_path / "store"),
            judge__poll_seconds=0.05,
            judge__max_poll_seconds=0.2,
        )
        proc = run(repo, "dvc", "repro", env=env)
        assert {"judge@sweep", "judge@steer"} <= ran(proc)
        got = json.loads((repo / "data/report/metrics.json").read_text())
        # Claude's fluency ratings add AxBench's combined score, and change nothing else; the
        # fake rates 0 what the degenerate rule flags and 2 the rest: 2 x the clean rate
        combined = got.pop("combined")
        assert got == json.loads(want)
        assert combined["control"] == pytest.approx(2 * got["clean"]["control"]["rate"])
        assert combined["steered"] == pytest.approx(2 * got["clean"]["steered"]["rate"])
        stats = json.loads((repo / "data/sweep/judge.json").read_text())
        assert stats["backend"] == "anthropic" and stats["unjudged"] == 0
        # both rubrics of every sample, in the same batches
        assert stats["requests_sent"] == stats["unique_requests"] > stats["samples"]
        ratings = stats["fluency_agreement"]["ratings"]
        assert ratings["degenerate"]["1"] == ratings["not_degenerate"]["1"] == 0
        assert ratings["degenerate"]["2"] == ratings["not_degenerate"]["0"] == 0
        # the fake server answers as the rule judge does: full agreement, all on the diagonal
        # (kappa is 1, or null where every sample got one category and kappa is undefined)
        agree = stats["agreement_with_rule"]
        used = [c for c, row in agree["confusion"].items() if sum(row.values())]
        assert agree["samples"] == stats["samples"]
        assert sum(agree["confusion"][c][c] for c in used) == stats["samples"]
        assert agree["kappa"] == (1.0 if len(used) > 1 else None)
        sent = server.state.requests_received
        set_params(repo, judge__max_wait_seconds=100)  # re-runs both judges: all cached
        assert {"judge@sweep", "judge@steer"} <= ran(run(repo, "dvc", "repro", env=env))
        assert server.state.requests_received == sent
        assert json.loads((repo / "data/sweep/judge.json").read_text())["requests_sent"] == 0
    finally:
        server.stop()
        restore(repo)


def test_a_queued_sweep_shares_the_judges_work(repo: Path, tmp_path: Path) -> None:
    """A sweep of steer's coefficient, queued with the Claude judge and one store, run two at
    once: each experiment lands with its coefficient in its params and its report. The sweep's
    samples are the same in both (and control's: the same seed), so their judge requests
    overlap; each id is sent once (the claims in the store), and the store holds one answer
    per id."""
    server = FakeServer(FakeState(answer=rule_answer))
    env = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-ant-test-key"}
    store = tmp_path / "store"
    judge = ["judge.backend=anthropic", f"judge.store={store}", "judge.poll_seconds=0.05",
             "judge.max_poll_seconds=0.2"]  # fmt: skip
    try:
        for coefficient in (0.5, 2.0):
            sets = [a for s in [*judge, f"steer.coefficient={coefficient}"] for a in ("-S", s)]
            run(repo, "dvc", "exp", "run", "--queue", *sets, "-n", f"q-{coefficient}", "report")
        status = run_queue(repo, env=env)
        shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
        requested = 0
        for coefficient in (0.5, 2.0):
            name = f"q-{coefficient}"
            assert "Success" in next(x for x in status.splitlines() if name in x), status
            data = experiment(shown, name)
            assert data is not None, f"{name} not in dvc exp show"
            assert data["params"]["params.yaml"]["data"]["steer"]["coefficient"] == coefficient
            metrics = data["metrics"]["data/report/metrics.json"]["data"]
            assert metrics["cell"]["coefficient"] == coefficient
            assert metrics["steered"]["n"] == 3 * 2
            for item in ("sweep", "steer"):
                requested += data["metrics"][f"data/{item}/judge.json"]["data"]["unique_requests"]
        attempts = server.state.attempts
        assert set(attempts.values()) == {1}, "an id was sent twice"
        assert requested > len(attempts)  # the two experiments asked for some ids both
        lines = (store / "answers.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == sorted(attempts)
    finally:
        server.stop()
