#!/usr/bin/env bash
# README command 1: install everything, then run the whole default pipeline offline.
#   bash scripts/pipeline.sh [extra dvc repro arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
dvc repro "$@"
python -m steerpipe.results.summary   # the headline results; `dvc metrics show` lists every metric
