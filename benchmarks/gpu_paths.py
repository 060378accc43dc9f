"""The pipeline's GPU-only paths under real conditions: one part of scripts/gpu-check.sh.

    python benchmarks/gpu_paths.py --device cuda --json paths.json
    python benchmarks/gpu_paths.py --device cpu      # the same code on the CPU, where it can

Each check is a row of the GPU check's table (status pass, fail or skipped, and its figures):

- fit: batch sizes from the real free memory (``batch_sizes.fit_rows``, ``fit_tokens``); a
  generation batch and a capture of those sizes run, and their peak stays under what was free.
- noise: the same seeds sample the same tokens on the device as on the CPU (float32).
- oom: a capture whose first batch exceeds the device's memory runs out of memory for real,
  is split, finishes, and its rows equal a capture in small batches.
- device_map: a model loaded with ``device_map=auto`` generates the greedy tokens of the same
  model on one device.
- allocator: ``model.device auto`` takes a real GPU by its UUID, and a second process that
  wants one waits while it is held, then takes it.

On the CPU the checks that need a GPU's memory or GPUs to allocate are skipped; the others
run at small sizes, so CI runs this file's code (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from steerpipe.lm import activations, batch_sizes, gpus
from steerpipe.lm.activations import capture_resid_pre
from steerpipe.lm.generation import generate
from steerpipe.lm.models import load_model
from steerpipe_presets.standins import real_config, write_model

QWEN = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
Result = tuple[str, dict[str, Any]]  # status, figures


def random_qwen(device: str, dtype: torch.dtype, *, small: bool) -> PreTrainedModel:
    """R1-Distill-1.5B's shape (or 2 narrow layers of it), random weights, seeded."""
    config = real_config(QWEN)
    if small:  # 2 narrow layers and a smaller vocabulary: a CPU runs the same checks
        config.num_hidden_layers, config.hidden_size, config.intermediate_size = 2, 256, 512
        config.num_attention_heads, config.num_key_value_heads = 4, 2
        config.head_dim, config.vocab_size = 64, 4096
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:2]
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    # the small one on the CPU, then copied: the same weights on both devices; the full
    # size straight on the device (initialising 1.8B weights on the host takes a while)
    with torch.device("cpu" if small else device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(device).eval().requires_grad_(False)


def prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab, (n, length), generator=g).tolist()


def peak_since(device: torch.device, fn: Callable[[], object]) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


@contextmanager
def out_of_memory(
    obj: object, method: str, size: Callable[[torch.Tensor], int]
) -> Iterator[tuple[list[int], list[int]]]:
    """Wraps ``obj.method`` for the block: the ``size`` of each call's ``input_ids``, and the
    sizes of the calls that ran out of memory (the caller's split then retries smaller)."""
    real = getattr(obj, method)
    sizes: list[int] = []
    failed: list[int] = []

    def counting(*a: Any, **k: Any) -> Any:
        sizes.append(size(k["input_ids"]))
        try:
            return real(*a, **k)
        except torch.OutOfMemoryError:
            failed.append(sizes[-1])
            raise

    setattr(obj, method, counting)
    try:
        yield sizes, failed
    finally:
        setattr(obj, method, real)


def check_fit(args: Any) -> Result:
    if args.device == "cpu":
        return "skipped", {"why": "on the CPU the caps are used as they are"}
    model = random_qwen(args.device, torch.bfloat16, small=False)
    dev = model.device
    free = batch_sizes.free_bytes(dev) or 0
    rows = batch_sizes.fit_rows(model, 1010, cap=100_000)
    vocab = int(model.config.vocab_size)
    gen_prompts = prompts(rows, 1000, vocab)
    start = time.perf_counter()
    # an out-of-memory split at the fitted size means the fit was wrong
    with out_of_memory(model, "generate", lambda ids: int(ids.shape[0])) as (_, ooms):
        gen_peak = peak_since(
            dev,
            lambda: generate(
                model,
                gen_prompts,
                max_new_tokens=10,
                temperature=0.6,
                top_p=0.95,
                batch_size=rows,
                pad_id=0,
                progress=False,
            ),
        )
    gen_s = time.perf_counter() - start
    budget = batch_sizes.fit_tokens(model, cap=10**8, longest=1000)
    cap_prompts = prompts(budget // 1000 + 2, 1000, vocab, seed=1)  # two batches
    cap_peak = peak_since(
        dev,
        lambda: capture_resid_pre(
            model, cap_prompts, [0] * len(cap_prompts), layers=[0, 14, 27], n_positions=5,
            token_budget=10**8, pad_id=0, progress=False,
        ),
    )  # fmt: skip
    figures = {
        "free_GB": free / 1e9,
        "fit_rows(1010 tokens)": rows,
        "generate_peak_GB": gen_peak / 1e9,
        "generate_s": gen_s,
        "fit_tokens(longest 1000)": budget,
        "capture_peak_GB": cap_peak / 1e9,
        "generate_oom_splits (rows)": ooms,
    }
    ok = gen_peak <= free and cap_peak <= free and rows > 1 and not ooms
    return ("pass" if ok else "fail"), figures


def check_noise(args: Any) -> Result:
    cpu = random_qwen("cpu", torch.float32, small=True)
    dev = random_qwen(args.device, torch.float32, small=True)
    rows = [p for p in prompts(8, 50, int(cpu.config.vocab_size)) for _ in range(4)]
    kwargs: dict[str, Any] = {"max_new_tokens": 16, "temperature": 0.6, "top_p": 0.95, "pad_id": 0}
    a = generate(cpu, rows, seed=3, progress=False, **kwargs)
    b = generate(dev, rows, seed=3, progress=False, **kwargs)
    same_rows = sum(x == y for x, y in zip(a, b, strict=True))
    same_tokens = sum(u == v for x, y in zip(a, b, strict=True) for u, v in zip(x, y, strict=True))
    figures = {"rows_equal": f"{same_rows}/{len(rows)}", "tokens_equal": same_tokens / 512}
    distinct = len({tuple(x) for x in a})
    figures["distinct_samples"] = distinct
    return ("pass" if same_rows >= len(rows) - 1 and distinct > 8 else "fail"), figures


def check_oom(args: Any) -> Result:
    if args.device == "cpu":
        return "skipped", {"why": "a real out-of-memory error needs a GPU"}
    model = random_qwen(args.device, torch.bfloat16, small=False)
    total = torch.cuda.get_device_properties(model.device).total_memory
    # about 1.5x the device's memory in one batch, were the budget not fitted to the memory
    per_token = batch_sizes.activation_bytes_per_token(model) + 4 * 1000
    n = int(1.5 * total / per_token / 1000) + 1
    seqs = prompts(n, 1000, int(model.config.vocab_size), seed=2)
    saved = activations.fit_tokens
    activations.fit_tokens = lambda model, cap, longest: cap  # type: ignore[assignment]
    kw: dict[str, Any] = {"layers": [0, 27], "n_positions": 5, "pad_id": 0, "progress": False}
    try:
        counted = out_of_memory(model.get_decoder(), "forward", lambda ids: int(ids.numel()))
        with counted as (sizes, failed):
            got = capture_resid_pre(model, seqs, [0] * n, token_budget=n * 1000, **kw)
    finally:
        activations.fit_tokens = saved
    want = capture_resid_pre(model, seqs[:8], [0] * 8, token_budget=8000, **kw)
    diff = float((got[:8].float() - want.float()).norm() / want.float().norm())
    figures = {
        "prompts x tokens": f"{n} x 1000",
        "ooms (tokens)": failed,
        "batches after": len(sizes) - len(failed),
        "rel_diff_vs_small_batches": diff,
    }
    return ("pass" if failed and diff < 2e-2 else "fail"), figures


def check_device_map(args: Any) -> Result:
    folder = Path(tempfile.mkdtemp(prefix="device-map-"))
    write_model(QWEN, folder)
    random_qwen("cpu", torch.float32, small=True).save_pretrained(folder)
    try:
        spread, tok = load_model(str(folder), device_map="auto")
        one, _ = load_model(str(folder), device=args.device)
    finally:
        gpus.release_all()
    rows = prompts(4, 30, 500)
    kwargs: dict[str, Any] = {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0}
    kwargs["pad_id"] = int(tok.pad_token_id)
    a = generate(spread, rows, progress=False, **kwargs)
    b = generate(one, rows, progress=False, **kwargs)
    placed = sorted({str(d) for d in getattr(spread, "hf_device_map", {}).values()})
    figures = {"devices": placed, "gpus": torch.cuda.device_count(), "greedy_equal": a == b}
    return ("pass" if a == b else "fail"), figures


HOLD = """
import sys, time
from steerpipe.lm import gpus
print(gpus.pick_device("auto"), flush=True)
time.sleep(float(sys.argv[1]))
"""


def check_allocator(args: Any) -> Result:
    if args.device == "cpu":
        return "skipped", {"why": "no GPUs to allocate"}
    ids = gpus.gpu_ids()
    n = len(ids)
    held = [
        subprocess.Popen([sys.executable, "-c", HOLD, "8"], stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    first = sorted(p.stdout.readline().strip() for p in held)  # type: ignore[union-attr]
    start = time.perf_counter()
    late = subprocess.run([sys.executable, "-c", HOLD, "0"], capture_output=True, text=True)
    waited = time.perf_counter() - start
    for p in held:
        p.wait()
    figures: dict[str, Any] = {"gpus": ids, "first_n_took": first, "late_took": late.stdout.strip()}
    figures["late_waited_s"] = waited
    ok = first == sorted(f"cuda:{i}" for i in range(n)) and waited > 4 and "waiting" in late.stderr
    return ("pass" if ok else "fail"), figures


CHECKS = {
    "fit": check_fit,
    "noise": check_noise,
    "oom": check_oom,
    "device_map": check_device_map,
    "allocator": check_allocator,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", nargs="*", default=list(CHECKS))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    results = []
    for name in args.only:
        start = time.perf_counter()
        try:
            status, figures = CHECKS[name](args)
        except Exception as e:  # one failed check must not hide the others' results
            status, figures = "fail", {"error": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
        seconds = time.perf_counter() - start
        results.append({"check": name, "status": status, "seconds": seconds, "figures": figures})
        print(f"{name}: {status} in {seconds:.1f} s {json.dumps(figures, default=str)}", flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    sys.exit(1 if any(r["status"] == "fail" for r in results) else 0)


if __name__ == "__main__":
    main()
