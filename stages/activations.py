"""Stage activations: resid_pre at the first positions of each training step, per kind.

    dvc repro activations
    paths from dvc.yaml's cmd: --examples --out
    reads `model` and `activations`

For every training example, ``blocks.{L}.hook_resid_pre`` at the first ``n_positions`` tokens of
the labelled step, for ``activations.layers`` (``all`` or a list), batched with padding under
``activations.token_budget`` (less on a GPU short of memory). Rows stream into the output file
as they are captured, so the dump may be larger than memory.
Outputs: ``<out>/<kind>.safetensors``, tensor ``resid_pre`` of shape
``[n_examples, n_layers, n_positions, d_model]`` with model, layers, positions, dtype in metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from steerpipe.config import StageError, check, load, run_stage, stage_args
from steerpipe.lm.activations import capture_resid_pre
from steerpipe.lm.models import ModelParams, load_from_params, n_layers, resolve_layers
from steerpipe.storage import read_parquet, tensor_file

INPUTS = ("examples",)
OUTPUTS = ("out",)


@dataclass(frozen=True)
class ActivationsParams:
    SECTION: ClassVar[str] = "activations"
    layers: Literal["all"] | list[int]
    n_positions: int  # first tokens of the labelled step
    token_budget: int  # tokens per forward batch (padded)

    def __post_init__(self) -> None:
        check(self.n_positions >= 1, "activations.n_positions", "at least 1")
        check(self.token_budget >= 1, "activations.token_budget", "at least 1")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(ActivationsParams)
    model_params = load(ModelParams)
    model, tok = load_from_params(model_params)
    layers = resolve_layers(p.layers, n_layers(model), "activations.layers")
    k = p.n_positions
    examples = [e for e in read_parquet(paths["examples"]) if e["split"] == "train"]
    short = [e for e in examples if len(e["step_ids"]) < k]
    if short:
        raise StageError(
            f"activations.n_positions={k} but the step of example (row {short[0]['row']}, "
            f"step {short[0]['step']}) has {len(short[0]['step_ids'])} tokens; "
            "raise prepare.min_step_tokens"
        )
    kinds = sorted({e["kind"] for e in examples})
    meta = {
        "model": model_params.name,
        "layers": layers,
        "positions": list(range(k)),
        "dtype": model_params.dtype,
        "hook": "blocks.{L}.hook_resid_pre",
    }
    d_model = int(model.config.hidden_size)
    for kind in kinds:
        rows = [e for e in examples if e["kind"] == kind]
        shape = (len(rows), len(layers), k, d_model)
        with tensor_file(paths["out"] / f"{kind}.safetensors", "resid_pre", shape, meta) as out:
            capture_resid_pre(
                model,
                [e["prompt_ids"] + e["step_ids"] for e in rows],
                [len(e["prompt_ids"]) for e in rows],
                layers=layers,
                n_positions=k,
                token_budget=p.token_budget,
                pad_id=int(tok.pad_token_id),
                out=out,
            )
        print(kind, shape)


if __name__ == "__main__":
    run_stage(main)
