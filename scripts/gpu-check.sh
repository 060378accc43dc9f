#!/usr/bin/env bash
# All GPU verification in one command: the tests on cuda, the GPU-only paths, the benchmark at
# paper size and both preset dry runs in bf16; one markdown table and its JSON land in $OUT
# (benchmarks/gpu_check.py says what each part does).
#   bash scripts/gpu-wheels.sh                 # once, where PyPI is reachable: fills .gpu/
#   bash scripts/gpu-check.sh                  # on the GPU machine, with .gpu/ carried along
# With .gpu/ present the project runs from src/ and the carried wheels (installed --no-deps
# into a scratch folder; the machine's CUDA torch stays). Without it (or with
# GPU_CHECK_WHEELS=none), the Python in $PYTHON must already have everything: the CPU test
# runs it so, with GPU_CHECK_ARGS="--device cpu --quick ...".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v "${PYTHON:-python3}")
wheels=${GPU_CHECK_WHEELS:-.gpu/wheels}
if [ -d "$wheels" ]; then
    site=$(mktemp -d /tmp/gpu-site.XXXX)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --no-build-isolation --target "$site" "$wheels"/*
    export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
    export STEERPIPE_TEST_TOKENIZER="$PWD/.gpu/smollm2-tokenizer"
fi
# the stages in dvc.yaml run `python`, which such a machine may lack (it has python3)
shim=$(mktemp -d /tmp/gpu-bin.XXXX)
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" > "$shim/python"
chmod +x "$shim/python"
export PATH="$shim:$PATH"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of arguments
exec "$PY" benchmarks/gpu_check.py --out "${OUT:-gpu-check-out}" ${GPU_CHECK_ARGS:-}
