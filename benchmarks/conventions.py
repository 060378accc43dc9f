"""What reading a transcoder at the wrong hook point costs, on the packaged SmolLM2.

    python benchmarks/conventions.py      (after `dvc repro`: needs the default pipeline's
                                           transcoder and trace questions under data/)

Takes the `transcoder` stage's layer-14 transcoder (trained at `mlp.hook_in`), rewrites it
exactly for `ln2.hook_normalized` (the norm's gain folded into W_enc: what a transcoder_circuits
file of the same map holds), and prints, for each (weights, hook point) pair: the features'
relative L2 error against the right reading, features firing per token, the overlap of the
firing sets (Jaccard) on one sentence, and the fidelity gate's measurements on the traces
stage's own gate tokens (FVE, L0, next-token loss increase).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml

from steerpipe.lm.hooks import mlp_modules, norm_gain
from steerpipe.lm.models import load_model
from steerpipe.storage import read_parquet
from steerpipe.transcoders.fidelity import fidelity, gate_sample, next_token_loss
from steerpipe.transcoders.formats import load_transcoder
from steerpipe.transcoders.transcoder import Transcoder, on_transcoder
from steerpipe.transcoders.yesno import prompt_ids, render

SENTENCE = "Is a whale a mammal? Let's think step by step. All whales are mammals, so yes."


def features(model: torch.nn.Module, tc: Transcoder, ids: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    with on_transcoder(model, tc, lambda x, out: seen.append(tc.encode(x))), torch.no_grad():
        model(ids)
    return seen[0][0, 1:]  # the first token's activations are outliers


def main() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())["traces"]
    model, tok = load_model()
    ours = load_transcoder("data/transcoder/weights/layer_14.safetensors")
    gain = norm_gain(mlp_modules(model, 14)[0]).detach()
    print(f"layer 14 norm gains: {float(gain.min()):.4f} to {float(gain.max()):.4f}")
    folded = Transcoder(  # the same map of x / rms(x)
        gain[:, None] * ours.W_enc,
        ours.b_enc - ours.b_dec @ ours.W_enc,
        ours.W_dec,
        torch.zeros_like(ours.b_dec),
        ours.b_dec_out,
        layer=14,
        input_hook="ln2.hook_normalized",
    )
    # The traces stage's gate tokens: the trace prompts, style by style, about 512 tokens.
    questions = read_parquet("data/questions/trace.parquet")
    prompts = {
        s: [prompt_ids(tok, render(t, q), chat_template=False) for q in questions]
        for s, t in params["templates"].items()
    }
    sample = gate_sample(prompts, int(params["fidelity_tokens"]))
    pad = int(tok.pad_token_id)
    base = next_token_loss(model, sample, pad_id=pad)
    ids = torch.tensor([tok(SENTENCE).input_ids])
    want = features(model, ours, ids)
    print("| weights | read at | feature error | firing / token | Jaccard | FVE | L0 | loss + |")
    print("|---|---|---|---|---|---|---|---|")
    for name, weights in (("ours", ours), ("folded", folded)):
        for hook in ("mlp.hook_in", "ln2.hook_normalized", "hook_resid_mid"):
            tc = copy.copy(weights)
            tc.input_hook = hook
            got = features(model, tc, ids)
            err = float((got - want).norm() / want.norm())
            a, b = want != 0, got != 0
            jaccard = float((a & b).sum() / (a | b).sum())
            stats = fidelity(model, tc, sample, pad_id=pad, base_loss=base)
            print(
                f"| {name} | {hook} | {err:.3g} | {float(b.sum(-1).float().mean()):.0f} | "
                f"{jaccard:.2f} | {stats['fraction_variance_explained']:.3f} | "
                f"{stats['l0']:.0f} | {stats['loss_increase']:.3f} |"
            )


if __name__ == "__main__":
    main()
