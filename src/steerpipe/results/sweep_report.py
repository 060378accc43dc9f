"""The sweep's part of experiment A's report (stage ``report``): the best choice by each metric,
and the grid as a table (a DVC plot) and heat maps.

- ``sweep_metrics``: the best choice by each rule that steer's ``auto`` can follow (the logprob
  score with the pooled clean rate, the clean rate, the raw rate, the logprob score), and how
  the raw rate and the logprob score rank the cells;
- ``sweep_table``: per layer, position and coefficient, the three rates, the logprob score and
  the KL on neutral text;
- ``plot_sweep``: the table, and heat maps of the clean rate at each coefficient and of the
  logprob score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerpipe.plots import plt, save_png, write_csv
from steerpipe.stats import rank_correlation
from steerpipe.steering.sweep import (
    CHOICE_KEYS,
    MEASURE_OF,
    MEASURES,
    best_choice,
    best_pooled_choice,
    best_scored_cell,
    choice_of,
    rates_by_choice,
)


def sweep_metrics(
    sweep: list[dict[str, Any]],
    scored: list[dict[str, Any]],
    coefficient_cells: int = 3,
    kl: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The sweep's best choice by each metric (the rules that steer's ``auto`` follows, by
    ``sweep.metric``, with no KL budget; ``logprob_clean`` pools ``coefficient_cells`` cells),
    each with its KL on neutral text where ``kl`` gives it, and the rank correlation over cells
    of the raw rate and the logprob score at the logprob metric's coefficient."""
    out: dict[str, Any] = {"choices": len(rates_by_choice(sweep)), "samples": len(sweep)}
    best, (hits, n) = best_pooled_choice(sweep, scored, coefficient_cells)
    out["best_logprob_clean"] = dict(zip(CHOICE_KEYS, best, strict=True)) | {
        "pooled_rate": hits / n,
        "pooled_samples": n,
    }
    for metric, measure in MEASURE_OF.items():
        rates = rates_by_choice(sweep, measure)
        best = best_choice(sweep, metric, scored)
        out[f"best_{metric}"] = dict(zip(CHOICE_KEYS, best, strict=True)) | {
            "rate": rates[best][0] / rates[best][1]
        }
    scores = {(r["layer"], r["position"]): r["score"] for r in scored}
    cell = best_scored_cell(scored)
    out["best_logprob"] = {"layer": cell[0], "position": cell[1], "score": scores[cell]}
    at = float(scored[0]["coefficient"])
    raw = {c[:2]: h / n for c, (h, n) in rates_by_choice(sweep).items() if c[2] == at}
    both = sorted(set(raw) & set(scores))
    # do the sampled-and-judged and the teacher-forced metrics rank the cells alike?
    out["rank_correlation"] = rank_correlation([raw[c] for c in both], [scores[c] for c in both])
    divergence = {choice_of(r): r["kl"] for r in kl or []}
    if divergence:
        for name in ("best_logprob_clean", "best_clean", "best_judged"):
            out[name]["kl"] = divergence.get(choice_of(out[name]))
    return out


def sweep_table(
    sweep: list[dict[str, Any]],
    scored: list[dict[str, Any]],
    kl: list[dict[str, Any]] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): per layer, position and coefficient, the raw, clean and degenerate
    rates, the samples, the logprob score (nan where the choice was not scored) and the KL on
    neutral text (nan where ``kl`` does not give it)."""
    rates = {m: rates_by_choice(sweep, m) for m in MEASURES}
    scores = {choice_of(r): r["score"] for r in scored}
    divergence = {choice_of(r): r["kl"] for r in kl or []}
    header = ["layer", "position", "coefficient", "concluding_rate", "clean_rate"]
    header += ["degenerate_rate", "n", "logprob_score", "kl"]
    rows = []
    nan = float("nan")
    for choice in sorted(set(rates["concluding"]) | set(scores)):
        n = rates["concluding"].get(choice, (0, 0))[1]
        values = [rates[m][choice][0] / n if n else nan for m in MEASURES]
        rows.append([*choice, *values, n, scores.get(choice, nan), divergence.get(choice, nan)])
    return header, rows


def plot_sweep(
    sweep: list[dict[str, Any]],
    scored: list[dict[str, Any]],
    metrics: dict[str, Any],
    table: Path,
    figure: Path,
    kl: list[dict[str, Any]] | None = None,
) -> None:
    """The sweep's grid as a table (a DVC plot) and heat maps side by side: the clean rate at
    each coefficient, and the logprob score."""
    header, rows = sweep_table(sweep, scored, kl)
    write_csv(header, rows, table)
    layers = sorted({r[0] for r in rows})
    positions = sorted({r[1] for r in rows})
    sampled = sorted({r[2] for r in rows if r[6]})
    at = {(r[0], r[1], r[2]): r for r in rows}
    nan = float("nan")

    def grid(column: int, coefficient: float) -> list[list[float]]:
        return [
            [at.get((lay, pos, coefficient), [nan] * 9)[column] for pos in positions]
            for lay in layers
        ]

    per_choice = max(r[6] for r in rows)
    rho = metrics["sweep"]["rank_correlation"]["spearman"]
    logprob_at = float(scored[0]["coefficient"]) if scored else nan
    limits: tuple[float | None, float | None] = (0.0, 1.0)
    panels = [(grid(4, c), f"clean rate at coefficient {c:g}", limits) for c in sampled]
    panels.append(
        (
            grid(7, logprob_at),
            f"logprob score (nats) at {logprob_at:g}"
            + ("" if rho is None else f"; Spearman {rho:+.2f} with the raw rate"),
            (None, None),
        )
    )
    width = 1.2 + 0.8 * len(positions)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(len(panels) * width + 1, 1.2 + 0.35 * len(layers))
    )
    control = metrics["clean"]["control"]["rate"]
    fig.suptitle(
        f"sweep: {per_choice} samples a choice; control's clean rate {control:.2f}", fontsize=9
    )
    for ax, (values, title, limits) in zip(list(axes), panels, strict=True):
        im = ax.imshow(values, vmin=limits[0], vmax=limits[1], cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(positions)), [str(p) for p in positions])
        ax.set_yticks(range(len(layers)), [str(lay) for lay in layers])
        ax.set_xlabel("step position of the vector")
        ax.set_ylabel("layer (hook_resid_pre)")
        ax.set_title(title, fontsize=8)
        fig.colorbar(im, ax=ax)
    save_png(fig, figure)
