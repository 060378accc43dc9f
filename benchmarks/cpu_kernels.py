"""What the CPU's kernels do to the bits and the time of the pipeline's float work.

    python benchmarks/cpu_kernels.py
    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT python benchmarks/cpu_kernels.py
    STEERPIPE_MKL_VENDOR_CHECK=1 python benchmarks/cpu_kernels.py

Prints, for the packaged SmolLM2: a hash of layer 15's residual stream and of the logits of one
forward (with 1 and with 2 threads: the thread count must not change them), the time of a
16 x 256-token forward, of 90 rows sampling 32 tokens each after a 60-token prompt (the solve
stages' batch), and of 200 training steps of the transcoder's shapes (512 x 576 by 576 x 2304,
forward and backward). Run it twice, as above, to see whether pinning ATen's and MKL's kernels
to AVX2, or MKL's own vendor check on an AMD CPU (steerpipe/mkl_path.py), changes the bits on
this CPU and what it costs (docs/pipeline.md, "Reproducibility").
"""

from __future__ import annotations

import hashlib
import os
import time

import torch

from steerpipe.lm.generation import generate
from steerpipe.lm.models import load_model


def digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.contiguous().numpy().tobytes()).hexdigest()[:12]


def main() -> None:
    model, tok = load_model("packaged:smollm2")
    ids = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog. " * 20)])
    hashes = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        hashes.append((threads, digest(out.hidden_states[15]), digest(out.logits)))
    torch.set_num_threads(2)
    batch = torch.randint(0, int(model.config.vocab_size), (16, 256), generator=torch.Generator())
    with torch.no_grad():
        model(batch[:2, :16])  # warm-up
        start = time.perf_counter()
        model(batch)
        forward = time.perf_counter() - start
    prompts = [row[:60].tolist() for row in batch.reshape(64, 64)[:45] for _ in range(2)]
    start = time.perf_counter()
    rows = generate(model, prompts, max_new_tokens=32, temperature=0.6, top_p=0.95,
                    batch_size=90, eos_ids=[], progress=False)  # fmt: skip
    decode = time.perf_counter() - start
    decoded = hashlib.sha1(str(rows).encode()).hexdigest()[:12]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 576, generator=g, requires_grad=True)
    w = torch.randn(576, 2304, generator=g, requires_grad=True)
    start = time.perf_counter()
    for _ in range(200):
        (torch.relu(x @ w) @ w.T).sum().backward()
    train = time.perf_counter() - start
    keys = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "STEERPIPE_MKL_VENDOR_CHECK")
    env = {k: os.environ.get(k, "-") for k in keys}
    print(f"kernels: {torch.backends.cpu.get_cpu_capability()} {env}")
    for threads, resid, logits in hashes:
        print(f"  {threads} thread(s): resid_pre[15] {resid}, logits {logits}")
    print(f"  forward 16 x 256 tokens: {forward:.2f} s; 200 training steps: {train:.2f} s")
    print(f"  90 rows x 32 sampled tokens: {decode:.2f} s (tokens {decoded})")


if __name__ == "__main__":
    main()
