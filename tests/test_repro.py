"""repro: stages side by side through `dvc repro --single-item`, in a scratch DVC repository
whose stages write when they started and ended; and MKL's strict mode, which keeps a product's
bits whatever the thread count (config.py sets it for every stage)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_repo import run

from steerpipe import repro

# a stage that waits, then writes "<start> <end>" (seconds since the epoch) to its output
TIMED = (
    'python -c "import sys,time; s=time.time(); time.sleep(1); '
    "open(sys.argv[1],'w').write(f'{s} {time.time()}')\""
)


def stage(out: str, deps: list[str], fail: bool = False) -> dict:
    cmd = f"{TIMED} {out}" + (" && exit 3" if fail else "")
    return {"cmd": cmd, "deps": deps, "outs": [out]}


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """a and b independent, c after both, d after c; ``seed.txt`` the one input."""
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "dvc", "init", "-q")
    (tmp_path / "seed.txt").write_text("1")
    stages = {
        "a": stage("a.txt", ["seed.txt"]),
        "b": stage("b.txt", ["seed.txt"]),
        "c": stage("c.txt", ["a.txt", "b.txt"]),
        "d": stage("d.txt", ["c.txt"]),
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return tmp_path


def span(repo: Path, name: str) -> tuple[float, float]:
    start, end = (repo / f"{name}.txt").read_text().split()
    return float(start), float(end)


def test_order_takes_the_longest_chain_first_then_dvc_yaml() -> None:
    upstream = {"x": set(), "a": set(), "b": {"a"}, "c": {"b"}, "y": set(), "z": {"y"}}
    assert repro.order(upstream) == {"a": 0, "b": 1, "y": 2, "x": 3, "c": 4, "z": 5}
    # a model stage weighs 10: x (10) outweighs the chain a-b-c (3), and z lifts y to 11
    assert repro.order(upstream, {"x", "z"}) == {"y": 0, "x": 1, "z": 2, "a": 3, "b": 4, "c": 5}


def test_the_graph_of_targets_and_what_they_need(scratch: Path) -> None:
    assert repro.stage_graph(scratch, []) == (
        {"a": set(), "b": set(), "c": {"a", "b"}, "d": {"c"}}, set(),
    )  # fmt: skip
    upstream, heavy = repro.stage_graph(scratch, ["c"])
    assert upstream == {"a": set(), "b": set(), "c": {"a", "b"}} and heavy == set()
    with pytest.raises(SystemExit, match="no stage named nope in dvc.yaml"):
        repro.stage_graph(scratch, ["c", "nope"])


def test_stages_run_side_by_side_after_what_they_need(scratch: Path, capsys) -> None:
    assert repro.run_stages(*repro.stage_graph(scratch, []), jobs=2, root=scratch, tick=0.05) == []
    a, b, c, d = (span(scratch, n) for n in "abcd")
    assert a[0] < b[1] and b[0] < a[1]  # a and b overlapped
    assert c[0] >= max(a[1], b[1]) and d[0] >= c[1]  # each after what it needs
    printed = capsys.readouterr().out
    assert printed.count("ran     ") == 4 and "start   d" in printed
    assert "Running stage 'a'" in (scratch / ".dvc/tmp/repro/a.log").read_text()
    # DVC recorded every stage: nothing to do, by its own status and by a second run
    assert "up to date" in run(scratch, "dvc", "status").stdout
    assert repro.run_stages(*repro.stage_graph(scratch, []), jobs=2, root=scratch, tick=0.05) == []
    assert capsys.readouterr().out.count("unchanged ") == 4
    assert span(scratch, "d") == d
    # one job: one stage at a time
    assert repro.run_stages(*repro.stage_graph(scratch, []), jobs=1, force=True, root=scratch) == []
    a, b = span(scratch, "a"), span(scratch, "b")
    assert a[1] <= b[0] or b[1] <= a[0]


def test_a_failure_stops_what_follows_and_names_its_log(scratch: Path, monkeypatch, capsys):
    stages = yaml.safe_load((scratch / "dvc.yaml").read_text())["stages"]
    stages["a"] = stage("a.txt", ["seed.txt"], fail=True)
    (scratch / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    monkeypatch.chdir(scratch)
    with pytest.raises(SystemExit, match=r"failed: a \(logs: \.dvc/tmp/repro/a\.log\)"):
        repro.main([])
    printed = capsys.readouterr().out
    assert "failed  a after" in printed and "ran     b" in printed  # b, started beside it, ended
    assert not (scratch / "c.txt").exists() and "start   c" not in printed
    with pytest.raises(SystemExit, match="--jobs must be at least 1"):
        repro.main(["--jobs", "0"])


PRODUCT = """
import hashlib, sys
import torch
import steerpipe.config  # sets MKL_CBWR before the first product
torch.set_num_threads(int(sys.argv[1]))
g = torch.Generator().manual_seed(0)
# a product of few rows with a long inner dimension (a short text through the MLP's down
# projection): without strict mode, this CPU's MKL gave other bits with two threads than one
a, b = torch.randn(40, 1536, generator=g), torch.randn(1536, 576, generator=g)
print(hashlib.sha1((a @ b).numpy().tobytes()).hexdigest())
"""


def test_mkl_strict_mode_keeps_a_products_bits_whatever_the_threads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    hashes = [
        subprocess.run(
            [sys.executable, "-c", PRODUCT, str(n)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
        for n in (1, 2)
    ]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 41
