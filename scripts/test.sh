#!/usr/bin/env bash
# README command 2: install everything, then lint, type-check and run the tests.
#   bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
python -m ruff check .
python -m ruff format --check .
python -m mypy
# two workers (the CI machine has two cores), given one test at a time (no xdist_group: each
# is its own scope) in the order tests/conftest.py sorts them (its pytest_collection_modifyitems)
python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder "$@"
