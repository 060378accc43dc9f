"""Stage sweep_logprob: the sweep's grid scored without sampling or a judge.

    dvc repro sweep_logprob
    paths from dvc.yaml's cmd: --vectors --examples --scores
    reads `model`, `prepare.kinds`, `sweep` (layers, positions, logprob_examples,
    logprob_coefficient, logprob_batch_size), `steer.scale`

For each cell, the change in the teacher-forced log-probability of the first
``sweep.logprob_examples`` training examples of each kind's step openings when the cell's
vector (times ``sweep.logprob_coefficient``, in ``steer.scale``'s units) is added, positive
kind against negative (``steerpipe/steering/logprob.py``). One forward for the plain model
and one per cell over the same examples, sharing batches (each batch mostly one example under
many cells: little padding).
Output: one row per cell (``score`` in nats, the two kinds' mean changes); ``sweep.metric:
logprob`` makes ``steer``'s ``auto`` cell the best one.
"""

from __future__ import annotations

from steerpipe.config import StageError, load, run_stage, stage_args
from steerpipe.lm.hooks import Steer
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.logprob import cell_score, opening_logprobs, scored_rows
from steerpipe.steering.prepare import PrepareParams
from steerpipe.steering.steer import SteerParams, cell_vector
from steerpipe.steering.sweep import SweepParams, check_cell
from steerpipe.storage import read_parquet, read_tensors, write_parquet

INPUTS = ("vectors", "examples")
OUTPUTS = ("scores",)


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(SweepParams)
    positive, negative = load(PrepareParams).kinds
    tensors, meta = read_tensors(paths["vectors"])
    cells = [(layer, pos) for layer in p.layers for pos in p.positions]
    for layer, pos in cells:
        check_cell(layer, pos, meta["layers"], meta["positions"], "sweep.layers/positions")
    train = [e for e in read_parquet(paths["examples"]) if e["split"] == "train"]
    examples = [e for e in train if e["kind"] == positive][: p.logprob_examples]
    examples += [e for e in train if e["kind"] == negative][: p.logprob_examples]
    is_positive = [e["kind"] == positive for e in examples]
    if all(is_positive) or not any(is_positive):
        raise StageError(f"the logprob metric needs training examples of {positive} and {negative}")
    # an opening as long as the positions the vectors were read at
    rows = scored_rows(examples, n_tokens=len(meta["positions"]))
    model, tok = load_from_params(load(ModelParams))
    scale = load(SteerParams).scale
    steers: list[Steer | None] = [None]  # the plain model, then each cell
    for layer, pos in cells:
        unit, _ = cell_vector(tensors, meta, layer, pos, scale)
        steers.append(Steer(layer, p.logprob_coefficient * unit))
    # example by example, each under every cell: a batch is mostly one example, so one length
    logp = opening_logprobs(
        model,
        [row for row in rows for _ in steers],
        [s for _ in rows for s in steers],
        pad_id=int(tok.pad_token_id),
        batch_size=p.logprob_batch_size,
    )
    per = len(steers)
    plain = logp[0::per]
    records = []
    for k, (layer, pos) in enumerate(cells, start=1):
        score = cell_score(plain, logp[k::per], is_positive)
        records.append(
            {"layer": layer, "position": pos, "coefficient": p.logprob_coefficient, **score}
        )
    write_parquet(records, paths["scores"])
    best = max(records, key=lambda r: r["score"])
    print(
        f"{len(cells)} cells scored on {sum(is_positive)} {positive} and "
        f"{len(rows) - sum(is_positive)} {negative} openings; best: layer {best['layer']}, "
        f"position {best['position']}, {best['score']:+.3f} nats"
    )


if __name__ == "__main__":
    run_stage(main)
