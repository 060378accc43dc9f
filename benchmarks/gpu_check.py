"""Every GPU verification in one run, written as one markdown table and its JSON.

    bash scripts/gpu-check.sh                        # on a GPU machine: installs, then this
    python benchmarks/gpu_check.py --out DIR         # the same, where everything is installed
    python benchmarks/gpu_check.py --out DIR --device cpu --quick   # CI's small form

Parts, in this order, each a subprocess with its own time limit inside one overall budget
(so that a part that fails or hangs leaves the others' results):

1. tests: ``pytest -m device --device cuda`` (the tests that take a device);
2. paths: ``benchmarks/gpu_paths.py`` (free-memory batch sizes, per-row noise against the
   CPU, a real out-of-memory split, ``device_map=auto``, the GPU allocator);
3. benchmark: ``benchmarks/steering.py`` at paper size (R1-Distill-1.5B shape, bf16), seed
   loop and pipeline in one process, with the decode-attention and cache variants; its rows
   are checked against the targets (steered evaluation >= 200x the seed loop, the sweep >=
   300x, capture >= 50% of the card's bf16 peak);
4. presets: the dry runs of paper-a and paper-b on the device in bf16, each in a scratch
   git + DVC repository (``presets.scratch_repo``).

Writes ``gpu-check.md``, ``gpu-check.json`` and one log per part to ``--out``, and prints
the markdown last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from steerpipe_presets.presets import scratch_repo

ROOT = Path(__file__).resolve().parents[1]
PAPER = ["--shape", "r1-distill", "--dtype", "bfloat16", "--prompts", "50", "--samples", "5"]
PAPER += ["--prompt-tokens", "1000", "--sweep-cells", "75", "--capture-prompts", "300"]
PAPER += ["--seed-rows", "20", "--batch-size", "512", "--token-budget", "65536"]
QUICK = ["--prompts", "2", "--samples", "2", "--prompt-tokens", "16", "--new-tokens", "3"]
QUICK += ["--sweep-cells", "2", "--capture-prompts", "3", "--seed-rows", "2"]
TARGETS = {"steered eval": 200.0, "sweep": 300.0}  # x the seed loop
CAPTURE_PEAK = 0.5  # of the card's bf16 peak


class Run:
    """Runs the parts as subprocesses inside one overall deadline, logging each to ``out``."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.deadline = out, time.monotonic() + budget_s
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}
        self.env["PYTHONUNBUFFERED"] = "1"

    def __call__(
        self, part: str, args: list[str], limit_s: float, cwd: Path = ROOT
    ) -> tuple[str, float]:
        """(status, seconds): pass, fail (non-zero exit) or timeout."""
        limit = max(1.0, min(limit_s, self.deadline - time.monotonic()))
        start = time.perf_counter()
        with open(self.out / f"{part}.log", "a") as log:
            log.write(f"$ {' '.join(args)}  (limit {limit:.0f} s)\n")
            log.flush()
            try:
                code = subprocess.run(
                    args, cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, timeout=limit
                ).returncode
                status = "pass" if code == 0 else "fail"
            except subprocess.TimeoutExpired:
                status = "timeout"
        return status, time.perf_counter() - start


def benchmark_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark's pipeline rows checked against the targets."""
    rows = []
    for row in report["rows"]:
        if row["path"] != "pipeline":
            continue
        kind = row["work"].split(":")[0]
        if kind in TARGETS:
            met = row["x_seed"] >= TARGETS[kind]
            figures = {"x_seed": round(row["x_seed"], 1), "target": TARGETS[kind]}
        else:  # capture: the fraction of the card's peak, which only a GPU run reports
            fraction = row.get("peak_fraction")
            met = fraction is not None and fraction >= CAPTURE_PEAK
            figures = {"peak_fraction": fraction, "target": CAPTURE_PEAK}
        rows.append({"check": row["work"], "status": "met" if met else "missed", **figures})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="for all parts together")
    ap.add_argument("--presets", nargs="*", default=["paper-a", "paper-b"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run, py = Run(args.out, args.budget_s), sys.executable
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    parts: list[dict[str, Any]] = []

    def record(part: str, check: str, status: str, seconds: float, **figures: Any) -> None:
        parts.append({"part": part, "check": check, "status": status, "seconds": seconds})
        parts[-1]["figures"] = figures

    tests = [
        py,
        "-m",
        "pytest",
        "-q",
        "-m",
        "device",
        "--device",
        args.device,
        "-p",
        "no:cacheprovider",
    ]
    if args.quick:
        tests += ["-k", "samples_on_the_device"]
    record("tests", "pytest -m device", *run("tests", tests, 180))

    paths_json = work / "paths.json"
    paths = [py, "benchmarks/gpu_paths.py", "--device", args.device, "--json", str(paths_json)]
    status, seconds = run("paths", paths, 180)
    if paths_json.exists():
        for r in json.loads(paths_json.read_text()):
            record("paths", r["check"], r["status"], r["seconds"], **r["figures"])
    else:
        record("paths", "gpu_paths.py", status, seconds)

    bench_json = work / "benchmark.json"
    sizes = QUICK if args.quick else PAPER
    bench = [py, "benchmarks/steering.py", "--device", args.device, *sizes, "--variants"]
    status, seconds = run("benchmark", [*bench, "--json", str(bench_json)], 240)
    record("benchmark", "steering.py", status, seconds)
    report = json.loads(bench_json.read_text()) if bench_json.exists() else None
    if report:
        for r in benchmark_rows(report):
            record("benchmark", r.pop("check"), r.pop("status"), 0.0, **r)

    dtype = "float32" if args.device == "cpu" else "bfloat16"
    for name in args.presets:
        if shutil.which("git") is None:
            record("presets", f"{name} dry run", "skipped", 0.0, why="no git on this machine")
            continue
        repo = work / name
        repo.mkdir()
        scratch_repo(ROOT, repo, run.env)
        dry = [py, "-m", "steerpipe_presets", name, "--dry-run"]
        dry += ["-S", f"model.device={args.device}", "-S", f"model.dtype={dtype}"]
        record("presets", f"{name} dry run", *run("presets", dry, 150, cwd=repo))

    lines = [
        f"GPU check, {time.strftime('%Y-%m-%d')}, {device_name(args.device)}",
        "",
        "| part | check | status | seconds | figures |",
        "|---|---|---|---|---|",
    ]
    for p in parts:
        figures = json.dumps(p["figures"], default=str) if p["figures"] else ""
        lines.append(
            f"| {p['part']} | {p['check']} | {p['status']} | {p['seconds']:.1f} | {figures} |"
        )
    if report:
        lines += ["", report["title"], "", "| work | path | seconds | tokens/s | x seed loop | "]
        lines[-1] += "TFLOP/s |\n|---|---|---|---|---|---|"
        lines += [table_line(r) for r in report["rows"]]
    markdown = "\n".join(lines) + "\n"
    (args.out / "gpu-check.md").write_text(markdown)
    summary = {"parts": parts, "benchmark": report, "device": device_name(args.device)}
    (args.out / "gpu-check.json").write_text(json.dumps(summary, indent=1, default=str))
    print(markdown)
    return 1 if any(p["status"] in ("fail", "timeout") for p in parts) else 0


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        name = f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()} ({total:.0f} GiB)"
        return f"{name}, torch {torch.__version__}"
    return f"CPU, torch {torch.__version__}"


def table_line(row: dict[str, Any]) -> str:
    extra = f"{row['tflops']:.1f} TFLOP/s" if "tflops" in row else ""
    if "peak_fraction" in row:
        extra += f" ({row['peak_fraction']:.1%} of peak)"
    return (
        f"| {row['work']} | {row['path']} | {row['seconds']:.2f} | {row['tokens_per_s']:,.0f} "
        f"| {row['x_seed']:.1f} | {extra} |"
    )


if __name__ == "__main__":
    sys.exit(main())
