"""Training a small transcoder where no pretrained one exists (the packaged SmolLM2).

The transcoder learns the MLP of one block, MLP input to MLP output, on the model's own
activations over packaged text, with an L1 penalty on the features (weighted by the decoder
norms, so the penalty cannot be dodged by shrinking the encoder). ``evaluate`` reports on
held-out tokens what a user of a transcoder wants to know: the fraction of variance of the MLP
output explained, the mean number of active features (L0), the dead fraction, and how much the
next-token loss rises when the transcoder replaces the MLP.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from steerpipe.activations import StopForward, right_pad, token_batches
from steerpipe.hooks import decoder_layers
from steerpipe.transcoders import Transcoder, steer_features


def collect_mlp_io(
    model: PreTrainedModel,
    sequences: list[list[int]],
    layer: int,
    *,
    token_budget: int = 4096,
    pad_id: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(MLP inputs, MLP outputs) at ``layer`` for every real (non-pad) token, float32."""
    mlp = decoder_layers(model)[layer].get_submodule("mlp")
    xs, ys = [], []
    keep: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        keep["x"], keep["y"] = args[0], output
        raise StopForward  # the layers after this one are not needed

    handle = mlp.register_forward_hook(hook)
    try:
        batches = token_batches([len(s) for s in sequences], token_budget)
        for batch in tqdm(batches, desc=f"mlp io {layer}", disable=not progress):
            ids, mask = right_pad([sequences[i] for i in batch], pad_id)
            with torch.no_grad(), contextlib.suppress(StopForward):
                model.get_decoder()(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
                )
            real = mask.bool().to(keep["x"].device)
            xs.append(keep["x"][real].float().cpu())
            ys.append(keep["y"][real].float().cpu())
    finally:
        handle.remove()
    return torch.cat(xs), torch.cat(ys)


def train_transcoder(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    layer: int,
    d_sae: int,
    l1: float = 1e-3,
    lr: float = 1e-3,
    steps: int = 1000,
    batch_size: int = 1024,
    seed: int = 0,
    progress: bool = True,
) -> Transcoder:
    g = torch.Generator().manual_seed(seed)
    d_in, d_out = x.shape[1], y.shape[1]
    w_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_in))
    w_dec = nn.Parameter(torch.randn(d_sae, d_out, generator=g) / math.sqrt(d_sae))
    b_enc = nn.Parameter(torch.zeros(d_sae))
    b_dec = nn.Parameter(x.mean(0).clone())
    b_dec_out = nn.Parameter(y.mean(0).clone())
    params = [w_enc, w_dec, b_enc, b_dec, b_dec_out]
    opt = torch.optim.Adam(params, lr=lr)
    scale = y.var(0).sum()  # so that l1 means the same at any layer's output scale
    with torch.enable_grad():
        for _ in tqdm(range(steps), desc=f"train transcoder {layer}", disable=not progress):
            idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
            xb, yb = x[idx], y[idx]
            f = torch.relu((xb - b_dec) @ w_enc + b_enc)
            mse = ((f @ w_dec + b_dec_out - yb) ** 2).sum(-1).mean() / scale
            sparsity = (f * w_dec.norm(dim=1)).sum(-1).mean()
            loss = mse + l1 * sparsity
            opt.zero_grad()
            loss.backward()
            opt.step()
    return Transcoder(
        W_enc=w_enc.detach().clone(),
        b_enc=b_enc.detach().clone(),
        W_dec=w_dec.detach().clone(),
        b_dec=b_dec.detach().clone(),
        b_dec_out=b_dec_out.detach().clone(),
        layer=layer,
    )


def log_frequency(transcoder: Transcoder, x: torch.Tensor, floor: float = -10.0) -> torch.Tensor:
    """log10 of how often each feature fires on ``x``; ``floor`` (dead) where it never does."""
    fired = (transcoder.encode(x) > 0).float().mean(0)
    return torch.where(fired > 0, fired.clamp_min(1e-30).log10(), torch.tensor(floor))


def evaluate(transcoder: Transcoder, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    f = transcoder.encode(x)
    residual = ((transcoder.decode(f) - y) ** 2).sum()
    total = ((y - y.mean(0)) ** 2).sum()
    return {
        "fraction_variance_explained": float(1 - residual / total),
        "l0": float((f > 0).float().sum(-1).mean()),
        "dead_fraction": float(((f > 0).sum(0) == 0).float().mean()),
    }


def next_token_loss(
    model: PreTrainedModel,
    sequences: list[list[int]],
    *,
    transcoder: Transcoder | None = None,
    token_budget: int = 4096,
    pad_id: int = 0,
) -> float:
    """Mean next-token cross-entropy over real tokens; with ``transcoder``, it replaces the MLP."""
    total, count = 0.0, 0
    for batch in token_batches([len(s) for s in sequences], token_budget):
        ids, mask = right_pad([sequences[i] for i in batch], pad_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.no_grad():
            if transcoder is None:
                logits = model(input_ids=ids, attention_mask=mask).logits
            else:
                no_features = torch.zeros(0, dtype=torch.long)
                with steer_features(model, transcoder, no_features, 1.0, mode="replace"):
                    logits = model(input_ids=ids, attention_mask=mask).logits
        target = ids[:, 1:]
        valid = mask[:, 1:].bool()
        ce = nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), target, reduction="none"
        )
        total += float(ce[valid].sum())
        count += int(valid.sum())
    return total / max(count, 1)
