"""Where a default run's generation time goes on the CPU, and what bfloat16 would change.

    python benchmarks/cpu_generation.py                      # after `dvc repro solve_control`
    python benchmarks/cpu_generation.py --dtype bfloat16 --rows 90
    python benchmarks/cpu_generation.py --profile            # the top ops, torch.profiler

Generates the first ``--rows`` of solve_control's solutions (the default: 90, half the stage)
exactly as the stage does, from ``data/solve_problems/problems.parquet``, and prints the
seconds of the generation and of the NLL pass, how many rows came out token for token as the
committed ``data/solve_control/solutions.parquet``, and whether a second run gives the same
tokens. Also a bare matmul of a decoding step's shape (90 x 576 by 576 x 1536) in float32 and
bfloat16 (AMX on CPUs that have it). Figures: docs/pipeline.md, "Wall time".
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
from torch.profiler import ProfilerActivity, profile

from steerpipe.config import load
from steerpipe.lm.chat import chat_prompt_ids
from steerpipe.lm.generation import generate
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.lm.scoring import continuation_nll
from steerpipe.steering.solutions import SolveParams
from steerpipe.storage import read_parquet


def matmul_gflops(dtype: torch.dtype, rows: int = 90, n: int = 200) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(rows, 576, generator=g).to(dtype)
    w = torch.randn(1536, 576, generator=g).to(dtype)
    for _ in range(5):
        a @ w.T
    start = time.perf_counter()
    for _ in range(n):
        a @ w.T
    return 2 * rows * 576 * 1536 * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=90, help="solutions (2 a problem)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top ops")
    args = ap.parse_args()
    p = load(SolveParams).generation
    problems = read_parquet("data/solve_problems/problems.parquet")
    committed = read_parquet("data/solve_control/solutions.parquet")
    model, tok = load_from_params(load(ModelParams))
    model = model.to(getattr(torch, args.dtype))
    prompts = [chat_prompt_ids(tok, p.instruction + r["problem"]) for r in problems]
    rows = [ids for ids in prompts for _ in range(p.n_samples)][: args.rows]
    pad = int(tok.pad_token_id)
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) if args.profile else nullcontext() as prof:
            out = generate(
                model, rows, max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                top_p=p.top_p, seed=p.seed, batch_size=p.batch_size, pad_id=pad, progress=False,
            )  # fmt: skip
            runs.append(out)
        seconds = time.perf_counter() - start
        if prof is not None:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            break
    start = time.perf_counter()
    continuation_nll(model, rows, runs[0], pad_id=pad, batch_size=p.batch_size, progress=False)
    nll = time.perf_counter() - start
    same = sum(r["ids"] == out for r, out in zip(committed, runs[0], strict=False))
    print(f"{args.dtype}, {torch.get_num_threads()} threads, {len(rows)} rows of up to "
          f"{p.max_new_tokens} tokens ({sum(map(len, runs[0]))} generated)")  # fmt: skip
    print(f"generate: {seconds:.1f} s (the second run); nll: {nll:.1f} s")
    print(f"rows equal to the committed float32 solutions: {same} of {len(rows)}")
    if len(runs) == 2:
        print(f"a second run gives the same tokens: {runs[0] == runs[1]}")
    for dtype in (torch.float32, torch.bfloat16):
        print(f"matmul 90x576 @ 576x1536, {dtype}: {matmul_gflops(dtype):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
