"""Stage sweep: steered samples for every (layer, position) cell of a grid.

    python stages/sweep.py                (reads `model`, `sampling`, `prepare.kinds`, `sweep`)

Vector ``[layer, pos]`` times ``sweep.coefficient`` is added at ``blocks.{layer}.hook_resid_pre``
on every position, prompt and generated tokens, for ``n_samples`` samples on each of the first
``n_prompts`` test prompts of the negative kind. All cells share batches (one vector per row).
Output: data/sweep/generations.parquet (one row per sample; the judge stage scores it).
"""

from __future__ import annotations

from steerpipe.cells import check_cell
from steerpipe.config import load_params, run_stage
from steerpipe.generation import Steer, sample_texts
from steerpipe.models import load_from_params
from steerpipe.prompts import held_out
from steerpipe.storage import read_parquet, read_tensors, write_parquet


def main() -> None:
    p = load_params("sweep")
    s = load_params("sampling")
    negative = load_params("prepare")["kinds"][1]
    tensors, meta = read_tensors("data/vectors/vectors.safetensors")
    vectors = tensors["vectors"]
    cells = [(int(layer), int(pos)) for layer in p["layers"] for pos in p["positions"]]
    for layer, pos in cells:
        check_cell(layer, pos, meta["layers"], meta["positions"], "sweep.layers/positions")
    examples = read_parquet("data/prepare/examples.parquet")
    prompts = held_out(examples, negative, int(p["n_prompts"]))
    model, tok = load_from_params(load_params("model"))
    coef = float(p["coefficient"])
    records, inputs, steers = [], [], []
    for layer, pos in cells:
        vec = coef * vectors[meta["layers"].index(layer), pos]
        for ex in prompts:
            for sample in range(int(p["n_samples"])):
                records.append(
                    {
                        "layer": layer,
                        "position": pos,
                        "coefficient": coef,
                        "row": ex["row"],
                        "step": ex["step"],
                        "sample": sample,
                    }
                )
                inputs.append(ex["prompt_ids"])
                steers.append(Steer(layer, vec))
    texts = sample_texts(model, tok, inputs, steers=steers, sampling=s, seed=int(p["seed"]))
    for rec, text in zip(records, texts, strict=True):
        rec["text"] = text
    write_parquet(records, "data/sweep/generations.parquet")
    print(f"{len(records)} samples over {len(cells)} cells")


if __name__ == "__main__":
    run_stage(main)
