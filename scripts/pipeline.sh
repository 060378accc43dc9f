#!/usr/bin/env bash
# README command 1: install everything, then run the whole default pipeline offline.
#   bash scripts/pipeline.sh [extra dvc repro arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
dvc repro "$@"
dvc metrics show
