"""The report stages' plots: a CSV table for ``dvc plots`` and a PNG figure, each atomic.

Importing this module selects matplotlib's file-only backend (Agg) before pyplot loads, so
the stages need no display.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

from steerpipe.storage import atomic_path  # noqa: E402

__all__ = ["plt", "save_png", "write_csv"]


def write_csv(header: Sequence[str], rows: Iterable[Sequence[object]], path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def save_png(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` (laid out tight, 100 dpi) and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
