"""GPU allocation across processes, with simulated GPUs: each test process stands for a stage."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from steerpipe.lm import gpus

# a stage: claim one of the GPUs (or all), say which, hold until told to stop, exit
STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from steerpipe.lm import gpus
    ids, mode = sys.argv[1].split(","), sys.argv[4]
    folder, out = Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "all":
        gpus.claim_all(ids, folder=folder, poll_s=0.05)
        out.write_text("all")
    else:
        out.write_text(str(gpus.claim_one(ids, folder=folder, poll_s=0.05)))
    while not out.with_suffix(".stop").exists():
        time.sleep(0.02)
    """
)


class Stage:
    def __init__(self, tmp: Path, name: str, ids: list[str], mode: str = "one") -> None:
        self.out = tmp / f"{name}.claimed"
        self.err = tmp / f"{name}.err"  # a file, so that it can be read while the stage runs
        args = [",".join(ids), str(tmp / "locks"), str(self.out), mode]
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", STAGE, *args], stderr=err)

    def claimed(self, timeout: float = 60.0) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.out.exists() and self.out.read_text():
                return self.out.read_text()
            if self.proc.poll() is not None:
                raise AssertionError(f"stage exited: {self.err.read_text()}")
            time.sleep(0.02)
        return None

    def said(self, text: str, timeout: float = 60.0) -> bool:
        """Whether the stage wrote ``text`` to stderr within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.err.read_text():
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> str:
        self.out.with_suffix(".stop").touch()
        self.proc.wait(timeout=60)
        err = self.err.read_text()
        assert self.proc.returncode == 0, err
        return err


@pytest.fixture
def stages(tmp_path: Path):
    made: list[Stage] = []

    def start(name: str, ids: list[str], mode: str = "one") -> Stage:
        made.append(Stage(tmp_path, name, ids, mode))
        return made[-1]

    yield start
    for s in made:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def test_stages_take_distinct_gpus_and_run_side_by_side(stages) -> None:
    ids = ["GPU-a", "GPU-b", "GPU-c"]
    running = [stages(f"s{i}", ids) for i in range(3)]
    # all three hold a GPU at the same moment, none the same one
    assert sorted(s.claimed() for s in running) == ["0", "1", "2"]
    for s in running:
        assert "waiting" not in s.stop()


def test_a_stage_waits_for_a_free_gpu_and_takes_the_one_released(stages) -> None:
    ids = ["GPU-a", "GPU-b"]
    first, second = stages("first", ids), stages("second", ids)
    held = {first.claimed(), second.claimed()}
    assert held == {"0", "1"}
    third = stages("third", ids)
    assert third.said("waiting for one to come free")  # both held: it waits, however slow
    assert third.claimed(timeout=0.5) is None
    first.stop()
    assert third.claimed() == first.out.read_text()  # the GPU that came free
    assert "came free" in third.stop()
    second.stop()


def test_a_killed_stage_releases_its_gpu(stages, tmp_path: Path) -> None:
    holder = stages("holder", ["GPU-a"])
    assert holder.claimed() == "0"
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait()
    try:
        assert gpus.claim_one(["GPU-a"], folder=tmp_path / "locks", poll_s=0.05) == 0
    finally:
        gpus.release_all()


def test_a_spread_model_holds_every_gpu(stages) -> None:
    ids = ["GPU-a", "GPU-b"]
    spread = stages("spread", ids, mode="all")
    assert spread.claimed() == "all"
    single = stages("single", ids)
    assert single.said("waiting for one to come free")
    assert single.claimed(timeout=0.5) is None
    spread.stop()
    assert single.claimed() in {"0", "1"}
    single.stop()


def test_pick_device(monkeypatch, tmp_path: Path, stages) -> None:
    import torch

    monkeypatch.setenv("STEERPIPE_GPU_LOCKS", str(tmp_path / "locks"))
    assert gpus.pick_device("cpu") == "cpu"
    assert gpus.pick_device("cuda:1") == "cuda:1"  # as written, no lock
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpus.pick_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpus, "gpu_ids", lambda: ["GPU-a", "GPU-b"])
    other = stages("other", ["GPU-a", "GPU-b"])
    assert other.claimed() == "0"
    try:
        assert gpus.pick_device("auto") == "cuda:1"
        assert gpus.pick_device("auto") == "cuda:1"  # a process that loads twice keeps its GPU
        other.stop()
        assert gpus.pick_device("cuda", spread=True) == "cuda"
        assert sorted(gpus._held) == ["GPU-a", "GPU-b"]
    finally:
        gpus.release_all()


def test_no_gpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="no GPUs"):
        gpus.claim_one([])
