"""Stage sweep_kl: each sweep choice's KL on neutral text, for the budget ``sweep.kl_max``.

    dvc repro sweep_kl
    paths from dvc.yaml's cmd: --vectors --kl
    reads `model`, `sweep` (layers, positions, coefficients, kl_max), `steer.scale`, `kl`

With ``sweep.kl_max`` set, for each choice of the sweep's grid (layer, position, coefficient
in ``steer.scale``'s units) the mean KL(steered || plain) per token of the next-token
distribution on ``kl``'s neutral text (``steerpipe/steering/side_effects.py``,
``steerpipe/lm/divergence.py``); steer and solve_steered then choose among the choices within
the budget (``steerpipe/steering/sweep.py``), and the report shows each best choice's KL. The
grid costs about as much as the logprob metric (120 choices: 30 s on the 2-core CPU), so with
``kl_max`` null (the default) the table is left empty and no model is loaded.
Output: one row per choice (``layer``, ``position``, ``coefficient``, ``kl``, to 4 places).
"""

from __future__ import annotations

import pyarrow as pa

from steerpipe.config import load, run_stage, stage_args
from steerpipe.steering.sweep import SweepParams, check_cell
from steerpipe.storage import read_tensors, write_parquet

INPUTS = ("vectors",)
OUTPUTS = ("kl",)
SCHEMA = pa.schema(
    [
        ("layer", pa.int64()),
        ("position", pa.int64()),
        ("coefficient", pa.float64()),
        ("kl", pa.float64()),
    ]
)


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(SweepParams)
    if p.kl_max is None:
        write_parquet(pa.Table.from_pylist([], schema=SCHEMA), paths["kl"])
        print("sweep.kl_max is null: no budget, no KL of the grid")
        return
    # imported here: with no budget (the default) the stage needs neither torch nor a model
    from steerpipe.lm.divergence import KLParams, neutral_texts, next_token_kl
    from steerpipe.lm.hooks import Steer
    from steerpipe.lm.models import ModelParams, load_from_params
    from steerpipe.steering.steer import SteerParams, cell_vector

    tensors, meta = read_tensors(paths["vectors"])
    scale = load(SteerParams).scale
    choices = [(lay, pos, c) for lay in p.layers for pos in p.positions for c in p.coefficients]
    for layer, pos, _ in choices:
        check_cell(layer, pos, meta["layers"], meta["positions"], "sweep.layers/positions")
    model, tok = load_from_params(load(ModelParams))
    kl_p = load(KLParams)
    units = {(lay, pos): cell_vector(tensors, meta, lay, pos, scale)[0] for lay, pos, _ in choices}
    kl = next_token_kl(
        model,
        neutral_texts(tok, kl_p),
        [Steer(layer, c * units[layer, pos]) for layer, pos, c in choices],
        batch_size=kl_p.batch_size,
    )
    rows = [
        {"layer": layer, "position": pos, "coefficient": c, "kl": round(value, 4)}
        for (layer, pos, c), value in zip(choices, kl, strict=True)
    ]
    write_parquet(pa.Table.from_pylist(rows, schema=SCHEMA), paths["kl"])
    within = sum(r["kl"] <= p.kl_max for r in rows)
    print(f"{within} of {len(rows)} sweep choices have KL within sweep.kl_max {p.kl_max:g}")


if __name__ == "__main__":
    run_stage(main)
