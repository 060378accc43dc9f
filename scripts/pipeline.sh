#!/usr/bin/env bash
# README command 1: install everything, then run the whole default pipeline offline.
#   bash scripts/pipeline.sh [stages] [--jobs N] [--force]   (python -m steerpipe.repro's arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# `dvc repro` with two stages side by side (steerpipe/repro.py): the same outputs, sooner
python -m steerpipe.repro "$@"
python -m steerpipe.results.summary   # the headline results; `dvc metrics show` lists every metric
