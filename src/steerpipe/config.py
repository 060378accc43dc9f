"""Reading a stage's section of params.yaml, and turning bad input into a clear exit.

Every stage script calls ``load_params("<section>")`` for its own section only, so that the
keys it lists as DVC params are exactly the ones it reads, and wraps its ``main`` in
``run_stage`` so that a ``StageError`` ends the process with one readable line and exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class StageError(Exception):
    """Bad input or parameters: the message names the parameter or the row at fault."""


def load_params(section: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if section not in params:
        raise StageError(f"{path} has no section '{section}'")
    return dict(params[section])


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; bad input exits 1 with the message, never a traceback."""
    try:
        main()
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
