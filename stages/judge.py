"""Stage judge (foreach: sweep, steer): classify each sample as 1 concluding, 2 verifying, 3 other.

    python stages/judge.py sweep          (reads `judge`)
    python stages/judge.py steer

Reads data/<item>/generations.parquet and writes data/<item>/judged.parquet: the same rows
with ``category`` (null where the judge gave no usable answer) and ``judge``; and
data/<item>/judge.json: what the judge did (requests sent, cache hits, tokens, unjudged).
With ``judge.backend: anthropic`` this needs ANTHROPIC_API_KEY; see docs/judge.md.
"""

from __future__ import annotations

import sys

from steerpipe.config import StageError, load_params, run_stage
from steerpipe.judge import make_judge
from steerpipe.storage import read_parquet, write_json, write_parquet


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in ("sweep", "steer"):
        raise StageError("usage: python stages/judge.py sweep|steer")
    item = sys.argv[1]
    p = load_params("judge")
    judge = make_judge(p)
    rows = read_parquet(f"data/{item}/generations.parquet")
    categories = judge.classify([r["text"] for r in rows])
    for row, category in zip(rows, categories, strict=True):
        row["category"] = category
        row["judge"] = judge.name
    write_parquet(rows, f"data/{item}/judged.parquet")
    write_json({"backend": judge.name, **judge.stats}, f"data/{item}/judge.json")
    print(f"judged {len(rows)} {item} samples with {judge.name}")


if __name__ == "__main__":
    run_stage(main)
