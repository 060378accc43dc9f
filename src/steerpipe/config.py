"""Typed parameters and stage arguments, and turning bad input into a clear exit.

Each section of params.yaml is a frozen dataclass with ``SECTION`` naming it, defined next to
the code it configures (``lm.models.ModelParams``, ``steering.sampling.SamplingParams``, ...; a
section only one stage reads may live in that stage's script); params.yaml names each class on
the line above its section. ``load(ModelParams)`` reads and checks the section once: the keys
must be exactly the fields, each value of the field's type (ints, floats, strings, booleans,
lists, ``Literal`` choices, ``X | None``, nested sections), and the class's ``__post_init__``
checks ranges. Every error names ``section.key``.

A stage's input and output paths are the arguments its ``cmd`` in dvc.yaml gives it
(``stage_args``), so each path is written once, next to the deps and outs that must match it.
Stages wrap ``main`` in ``run_stage`` so that a ``StageError`` ends the process with one
readable line and exit code 1.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

# A stage is a short process that loads torch and transformers (millions of objects) and exits.
# The cyclic collector scans them again and again while they load and once more at exit: 1.5 s
# of a model stage's 4.5 s start-up on the 2-core machine (`python -c "import
# steerpipe.lm.models"`). Every stage script imports this module before torch, so a stage (a
# script in stages/) loads with the collector off, and run_stage freezes what was loaded
# (gc.freeze: never scanned again) and turns it back on for the stage's own work.
IN_STAGE = (
    Path(getattr(sys.modules.get("__main__"), "__file__", None) or "").parent.name == "stages"
)


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to keep what the process frees for its next allocations, instead of
    giving it back to the kernel; whether it could (False: another C library, or
    ``STEERPIPE_MALLOC_DEFAULTS=1``).

    Why: by default a block over 128 KiB-32 MiB (a batch's activations, logits, a KV cache) is
    mapped anew for each tensor and unmapped when freed, and the top of the heap is given back
    past 128 KiB, so the kernel zeroes fresh pages again and again. On the 2-core machine the
    steer stage spent 6-12 s of its 130 s in the kernel that way; with this, 1.5-3 s, and it ran
    4-9 s sooner, with the same bits (docs/pipeline.md, "Wall time"). A stage is a short
    process, so memory it keeps until it exits is no loss."""
    if os.environ.get("STEERPIPE_MALLOC_DEFAULTS") == "1":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): left alone
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # glibc's malloc.h: M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_THRESHOLD -3; each returns 1
    # when taken (musl's mallopt takes nothing and returns 0)
    taken = [mallopt(-3, 1 << 30), mallopt(-1, (1 << 31) - 1), mallopt(-2, 1 << 29)]
    return all(taken)


if IN_STAGE:
    gc.disable()
    keep_freed_memory()

# MKL's strict reproducible mode: a matrix product's bits do not depend on the thread count.
# Without it MKL splits the inner dimension of a product of few rows (a decoding step's, a
# short text's) across its threads, and a stage run with one thread (two stages side by side,
# steerpipe.repro) wrote other last bits than with two. MKL reads it at its first product, so
# a stage that sets it here, before computing, is in time; MKL_CBWR=AVX2,STRICT pins the path too.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


class StageError(Exception):
    """Bad input or parameters: the message names the parameter or the row at fault."""


T = TypeVar("T")


def load(cls: type[T], path: str | Path = "params.yaml") -> T:
    """The section ``cls.SECTION`` of params.yaml, parsed into ``cls``."""
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    section: str = cls.SECTION  # type: ignore[attr-defined]
    node = params
    for part in section.split("."):  # a nested section, such as steps.claude
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"{path} has no section '{section}'")
        node = node[part]
    return parse(cls, node, section)


def parse(cls: type[T], raw: object, key: str) -> T:
    """``raw`` (a mapping from YAML) as ``cls``; ``key`` names it in errors."""
    if not isinstance(raw, dict):
        raise StageError(f"{key} must be a mapping of its keys, got {raw!r}")
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise StageError(f"{key}.{unknown[0]} is not a parameter; {key} has {names}")
    missing = [n for n in names if n not in raw]
    if missing:
        raise StageError(f"{key}.{missing[0]} is missing")
    hints = get_type_hints(cls)
    return cls(**{n: coerce(raw[n], hints[n], f"{key}.{n}") for n in names})


def coerce(value: object, tp: Any, key: str) -> Any:
    """``value`` checked against the type ``tp`` (ints become floats where floats are asked)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return coerce(value, arg, key)
            except StageError:
                continue
        raise StageError(f"{key} must be {describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
    elif origin is list:
        if isinstance(value, list):
            return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        return parse(tp, value, key)  # type: ignore[arg-type]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{key}: no rule for the type {tp!r}")
    raise StageError(f"{key} must be {describe(tp)}, got {value!r}")


def describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of ({describe(args[0])})"
    if origin is dict:
        return f"a mapping to ({describe(args[1])})"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, "null" if tp is type(None) else getattr(tp, "__name__", str(tp)))


def check(ok: bool, key: str, rule: str) -> None:
    """A ``StageError`` saying ``key`` must satisfy ``rule`` unless ``ok``."""
    if not ok:
        raise StageError(f"{key} must be {rule}")


def stage_args(inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, Path]:
    """The paths ``--<name> PATH`` that dvc.yaml's ``cmd`` passes, one per input and output.

    A stage lists its names in ``INPUTS`` and ``OUTPUTS``; tests/test_dvc_yaml.py checks that
    the inputs' paths are exactly the stage's data deps and the outputs' its outs.
    """
    ap = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__)
    for name in (*inputs, *outputs):
        ap.add_argument(f"--{name}", type=Path, required=True)
    return dict(vars(ap.parse_args()))


@contextmanager
def collector_paused() -> Iterator[None]:
    """In a stage, the cyclic collector off while a block makes objects that live as long as
    the process (a model, and transformers' modeling code, which a stage imports only when it
    loads one), which are then frozen out of later collections, as ``run_stage`` does for the
    stage's own imports. Elsewhere (tests, notebooks) nothing: freezing would keep whatever
    else is alive then from ever being collected. ``side_effects`` on the packaged model spent
    0.29 s in 649 collections without it, 0.01 s in 125 with it (``gc.callbacks``)."""
    if not IN_STAGE:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; bad input exits 1 with the message, never a traceback.

    The modules a stage script imported are frozen out of the cyclic collector first (it was
    off while they loaded, above): they live as long as the process, and scanning them, in
    the stage's collections and at exit, cost about a second.
    """
    gc.freeze()
    gc.enable()
    try:
        main()
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
