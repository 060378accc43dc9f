"""Presets: the papers' settings as one command each, and a dry run of each on stand-ins.

    python -m steerpipe_presets --list
    python -m steerpipe_presets paper-a                  # the real run: GPU, hub, API key
    python -m steerpipe_presets paper-a --dry-run        # tiny stand-ins, offline, CPU
    python -m steerpipe_presets paper-b -S traces.transcoders=/data/tc   # your overrides last
    python -m steerpipe_presets paper-a --print          # only show the dvc command

A preset is ``presets/<name>.yaml``: the stage(s) to reach (``target``), the parameters that
differ from params.yaml (``params``), optionally the original's numbers (``reference``), the
parameters that must name an existing path (``must_exist``), the transcoder parameter that may
be a hub repo id (``hub``: resolved here, HF cache first, to the local snapshot folder that DVC
then tracks as a dependency), and a ``dry_run`` section: which parameters point at stand-ins
(``steerpipe_presets.standins``) and the tiny sizes. A preset
with ``extends: <other>`` is a variant of another. The command it runs is
``dvc exp run -n <name> <target> -S key=value ...``, so the run is an ordinary DVC
experiment: cached, and compared with ``dvc exp show``. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from steerpipe.config import StageError
from steerpipe_presets import standins


def load_preset(name: str, root: Path = Path(".")) -> dict[str, Any]:
    path = root / "presets" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (root / "presets").glob("*.yaml"))
        raise StageError(f"no preset {name!r} in {root / 'presets'}; there are: {known}")
    preset = yaml.safe_load(path.read_text())
    if "extends" in preset:  # a variant: another preset with some parameters changed
        preset = merge(load_preset(preset.pop("extends"), root), preset)
    for key in ("target", "params"):
        if key not in preset:
            raise StageError(f"{path}: no {key!r}")
    return dict(preset)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, section by section."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def override_value(value: Any) -> str:
    """A value in the syntax of ``dvc exp run -S`` (Hydra's overrides): strings quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, str):
        if "\\" in value or "'" in value:
            raise StageError(f"preset value {value!r}: quotes and backslashes are not supported")
        return f"'{value}'"
    raise StageError(f"preset value {value!r}: not a string, number, boolean or list")


def check_keys(params: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Every key a preset sets exists in params.yaml (a typo would otherwise add a key)."""
    known = flatten(params)
    prefixes = {k.rsplit(".", i)[0] for k in known for i in range(k.count(".") + 1)}
    unknown = [k for k in overrides if k not in known and k not in prefixes]
    if unknown:
        raise StageError(f"preset sets {unknown}, which params.yaml does not have")


def build_standins(
    preset: dict[str, Any], params: dict[str, Any], folder: Path
) -> tuple[dict[str, Any], Path | None]:
    """Writes the dry run's stand-ins into ``folder``: the parameters that point at them, and
    the local Hugging Face cache that holds a stand-in hub transcoder set (or None)."""
    spec = preset["dry_run"]["standins"]
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    name = spec["model"]
    model_dir = standins.write_model(name, folder / "model")
    out.update({"model.name": str(model_dir.resolve()), "model.random_init": True})
    if "steps" in spec:
        from steerpipe.steering.steps import SCHEMA

        table = pa.Table.from_pylist(standins.steps_rows(24), schema=SCHEMA)
        pq.write_table(table, folder / "steps.parquet")
        out[spec["steps"]] = str((folder / "steps.parquet").resolve())
    if "solve" in spec:
        pq.write_table(pa.Table.from_pylist(standins.math_rows(8)), folder / "math.parquet")
        out[spec["solve"]] = str((folder / "math.parquet").resolve())
    if "questions" in spec:
        pq.write_table(pa.Table.from_pylist(standins.boolq_rows(24)), folder / "boolq.parquet")
        out[spec["questions"]] = str((folder / "boolq.parquet").resolve())
    d_model = standins.ARCHITECTURES[name].standin_hidden_size
    traces = params["traces"]
    if spec.get("transcoders"):
        standins.write_transcoders(
            folder / "transcoders", traces["file"], traces["layers"], d_model
        )
        out[spec["transcoders"]] = str((folder / "transcoders").resolve())
    cache = None
    if spec.get("hub_transcoders"):  # the hub id stays; its files are in a local cache
        cache = (folder / "hf-cache").resolve()
        snapshot = standins.hub_snapshot(cache, str(traces["transcoders"]))
        standins.write_circuit_tracer_set(snapshot, traces["layers"], d_model)
    return out, cache


def resolve_hub(
    key: str,
    overrides: dict[str, Any],
    given: dict[str, str],
    params: dict[str, Any],
    cache: Path | None,
) -> str:
    """The local folder of the transcoder set that ``key`` names (a folder or a hub id)."""
    from steerpipe.transcoders.sets import resolve_source

    def value(name: str) -> Any:
        if name in given:
            return yaml.safe_load(given[name])
        section, _, field = name.partition(".")
        return overrides.get(name, params[section][field])

    return str(
        resolve_source(
            str(value(key)),
            str(value("traces.file")),
            list(value("traces.layers")),
            cache_dir=cache,
        )
    )


def command(
    name: str, *, dry_run: bool = False, extra: list[str] | None = None, root: Path = Path(".")
) -> list[str]:
    """The ``dvc exp run`` command of a preset (building the stand-ins of a dry run)."""
    preset = load_preset(name, root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    overrides = flatten(preset["params"])
    cache = None
    if dry_run:
        if "dry_run" not in preset:
            raise StageError(f"preset {name!r} has no dry_run section")
        overrides.update(flatten(preset["dry_run"].get("params", {})))
        merged = merge(params, preset["params"])
        standin_params, cache = build_standins(preset, merged, root / ".dry-run" / name)
        overrides.update(standin_params)
    check_keys(params, overrides)
    bad = [item for item in extra or [] if "=" not in item]
    if bad:
        raise StageError(f"-S takes key=value, got {bad}")
    given = dict(item.split("=", 1) for item in extra or [])
    for key in preset.get("hub", []):  # DVC tracks a folder: a hub id becomes its snapshot
        overrides[key] = resolve_hub(key, overrides, given, params, cache)
        extra = [item for item in extra or [] if item.split("=", 1)[0] != key]
        given.pop(key, None)
    for key in preset.get("must_exist", []):  # e.g. the user's transcoder folder
        path = given.get(key, "").strip("'\"") or str(overrides.get(key, ""))
        if not Path(path).exists():
            raise StageError(f"{key}: {path!r} does not exist; pass -S {key}=<path>")
    for key in given:  # the user's value replaces the preset's (one -S per key)
        overrides.pop(key, None)
    args = ["dvc", "exp", "run", "-n", f"{name}-dry-run" if dry_run else name]
    for key, value in overrides.items():
        args += ["-S", f"{key}={override_value(value)}"]
    for item in extra or []:
        args += ["-S", item]
    targets = preset["target"]  # a stage, or a list of them
    return [*args, *(map(str, targets if isinstance(targets, list) else [targets]))]


def beside_reference(preset: dict[str, Any], root: Path = Path(".")) -> str:
    """Our concluding rates next to the original's (experiment A presets)."""
    reference = preset.get("reference")
    metrics_path = root / "data" / "report" / "metrics.json"
    if not reference or not metrics_path.exists():
        return ""
    ours = json.loads(metrics_path.read_text())
    lines = ["| condition | ours | original |", "|---|---|---|"]
    for cond, ref in reference.items():
        got = ours[cond]
        k, n = int(got["count"]), int(got["n"])
        lines.append(
            f"| {cond} | {k}/{n} = {k / n:.3f} | {ref['concluding']}/{ref['n']} = {ref['rate']} |"
        )
    return "\n".join(lines)


def scratch_repo(root: Path, folder: Path, env: dict[str, str] | None = None) -> Path:
    """A throwaway git + DVC repository in ``folder`` with the pipeline of ``root`` (code,
    dvc.yaml, params, presets): a dry run there leaves the workspace of ``root`` as it was."""
    import shutil

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(root / name, folder / name)
    for name in ("stages", "src", "presets"):
        shutil.copytree(root / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".gitignore").write_text(".dry-run/\n")
    for args in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "dry-run@example.com"],
        ["git", "config", "user.name", "dry run"],
        ["dvc", "init", "-q"],
    ):
        subprocess.run(args, cwd=folder, env=env, check=True)
    shutil.copytree(root / ".dvc" / "plots", folder / ".dvc" / "plots", dirs_exist_ok=True)
    subprocess.run(["git", "add", "-A"], cwd=folder, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=folder, env=env, check=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", help="a preset in presets/")
    ap.add_argument("--dry-run", action="store_true", help="tiny stand-ins, offline")
    ap.add_argument(
        "-S", "--set", action="append", default=[], help="key=value, after the preset's"
    )
    ap.add_argument("--print", action="store_true", help="print the dvc command, do not run it")
    ap.add_argument("--list", action="store_true", help="list the presets")
    args = ap.parse_args(argv)
    if args.list or not args.name:
        for path in sorted(Path("presets").glob("*.yaml")):
            print(f"{path.stem}: {yaml.safe_load(path.read_text()).get('description', '')}")
        return 0
    try:
        cmd = command(args.name, dry_run=args.dry_run, extra=args.set)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(shlex.join(cmd) if args.print else " ".join([*cmd[:6], "...", cmd[-1]]), flush=True)
    if args.print:
        return 0
    code = subprocess.run(cmd).returncode
    if code == 0:
        print(beside_reference(load_preset(args.name)))
        print(
            "The workspace now holds this experiment (params.yaml, data/); `dvc exp show` "
            "compares it with others, `git checkout params.yaml && dvc checkout` goes back."
        )
    return code
