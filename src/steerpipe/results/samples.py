"""Samples to read beside each report: a seeded draw of prompts (or problems), and under each
every condition's texts next to control's, marked as the judge and the degenerate rule saw
them. A rate is what its samples show; read these before believing one.

``samples_markdown`` writes the file that the report and solve_report stages declare as an
output (``data/report/samples.md``, ``data/solve_report/samples.md``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def cell(value: Any) -> str:
    """A value as one markdown table cell: newlines shown as ⏎, pipes escaped."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "⏎")


def draw(units: Sequence[Any], n: int, seed: int) -> list[Any]:
    """``n`` of the distinct ``units`` (all if fewer), drawn with ``seed``, in sorted order."""
    distinct = sorted(set(units))
    return sorted(random.Random(seed).sample(distinct, min(n, len(distinct))))


def samples_markdown(
    rows: list[dict[str, Any]],
    *,
    unit: Callable[[dict[str, Any]], Any],
    unit_name: str,
    columns: Sequence[Column],
    n: int,
    seed: int,
    title: str,
) -> str:
    """For ``n`` units (prompts) drawn with ``seed``, a table of every row of the unit: control's
    first, then the other conditions in order of their coefficient (then name), with
    ``columns`` (header, value of a row) and the text last."""

    def order(r: dict[str, Any]) -> tuple[bool, float, str, int]:
        c = r.get("coefficient")
        return (
            r["condition"] != "control",
            float(c) if c is not None else 0.0,
            r["condition"],
            r["sample"],
        )

    chosen = draw([unit(r) for r in rows], n, seed)
    lines = [f"# {title}", ""]
    lines.append(
        f"{len(chosen)} {unit_name}s drawn with seed {seed}; ⏎ is a newline. Under each, every "
        "condition's samples, control's first. Read them before you believe a rate."
    )
    headers = ["condition", "sample", *(h for h, _ in columns), "text"]
    for u in chosen:
        lines += ["", f"## {unit_name} {u}", ""]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "---|" * len(headers))
        for r in sorted((r for r in rows if unit(r) == u), key=order):
            values = [r["condition"], r["sample"], *(f(r) for _, f in columns), r["text"]]
            lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def degenerate_mark(row: dict[str, Any]) -> str:
    """``no``, or ``yes (<the measures past their thresholds>)``."""
    return f"yes ({row['degenerate_reasons']})" if row["degenerate"] else "no"
