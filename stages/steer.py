"""Stage steer: samples on the negative-kind test prompts with and without the vector.

    python stages/steer.py                (reads `model`, `sampling`, `prepare.kinds`, `steer`)

The cell is ``steer.layer`` / ``steer.position``; ``auto`` takes the sweep cell with the
highest judged concluding rate (ties: lower layer, then lower position). Steered and control
rows share batches. Output: data/steer/generations.parquet (``condition``: control / steered).
"""

from __future__ import annotations

from steerpipe.cells import best_cell, check_cell
from steerpipe.config import load_params, run_stage
from steerpipe.generation import Steer, sample_texts
from steerpipe.models import load_from_params
from steerpipe.prompts import held_out
from steerpipe.storage import read_parquet, read_tensors, write_parquet


def main() -> None:
    p = load_params("steer")
    s = load_params("sampling")
    negative = load_params("prepare")["kinds"][1]
    tensors, meta = read_tensors("data/vectors/vectors.safetensors")
    auto = best_cell(read_parquet("data/sweep/judged.parquet"))
    layer = auto[0] if p["layer"] == "auto" else int(p["layer"])
    pos = auto[1] if p["position"] == "auto" else int(p["position"])
    check_cell(layer, pos, meta["layers"], meta["positions"], "steer.layer/position")
    coef = float(p["coefficient"])
    vec = coef * tensors["vectors"][meta["layers"].index(layer), pos]
    n = None if p["n_prompts"] == "all" else int(p["n_prompts"])
    prompts = held_out(read_parquet("data/prepare/examples.parquet"), negative, n)
    model, tok = load_from_params(load_params("model"))
    records, inputs, steers = [], [], []
    for condition in ("control", "steered"):
        for ex in prompts:
            for sample in range(int(p["n_samples"])):
                records.append(
                    {
                        "condition": condition,
                        "layer": layer,
                        "position": pos,
                        "coefficient": coef,
                        "row": ex["row"],
                        "step": ex["step"],
                        "sample": sample,
                    }
                )
                inputs.append(ex["prompt_ids"])
                steers.append(Steer(layer, vec) if condition == "steered" else None)
    texts = sample_texts(model, tok, inputs, steers=steers, sampling=s, seed=int(p["seed"]))
    for rec, text in zip(records, texts, strict=True):
        rec["text"] = text
    write_parquet(records, "data/steer/generations.parquet")
    print(f"cell (layer {layer}, position {pos}, coefficient {coef}): {len(records)} samples")


if __name__ == "__main__":
    run_stage(main)
