"""dvc.yaml: every stage lists exactly the code it runs and the params sections it reads; the
package's layout keeps experiment B's stages free of experiment A's code.

The code a stage runs is its script plus every steerpipe module it imports, transitively
(``scripts/write_deps.py`` writes those deps); a module missing from deps would let an edit to
it go unnoticed by ``dvc repro``, and a module listed for nothing would re-run the stage.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from pipeline_repo import EXPERIMENT_B

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "steerpipe"


def load_script(path: Path, name: str) -> ModuleType:
    """A Python file imported as a module named ``name`` (its ``main`` does not run)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


write_deps = load_script(ROOT / "scripts" / "write_deps.py", "write_deps")
code_closure = write_deps.code_closure


def interpolate(text: str) -> str:
    """dvc.yaml's ``${section.key}`` references, filled in from params.yaml as DVC does."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def value(match: re.Match[str]) -> str:
        node = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{(\w+(?:\.\w+)+)\}", value, text)


def stages() -> dict[str, dict]:
    spec = yaml.safe_load(interpolate((ROOT / "dvc.yaml").read_text()))["stages"]
    out = {}
    for name, stage in spec.items():
        if "foreach" in stage:
            for item in stage["foreach"]:
                text = yaml.safe_dump(stage["do"]).replace("${item}", item)
                out[f"{name}@{item}"] = yaml.safe_load(text)
        else:
            out[name] = stage
    return out


# modules every stage imports but which only move bytes or read params (config, storage)
# are listed too: an edit to them can change any output
def test_code_deps_are_exact() -> None:
    for name, stage in stages().items():
        script = ROOT / stage["cmd"].split()[1]
        code_deps = [d for d in stage["deps"] if d.endswith(".py")]
        assert code_deps == code_closure(script), name


def stage_module(script: Path) -> ModuleType:
    """A stage script imported as a module (its ``main`` does not run)."""
    return load_script(script, f"stage_{script.stem}")


def imported_class(script: Path, module: object, name: str) -> type:
    """The class ``name`` that ``script`` imports, at its top or inside a function (a stage
    may import what only one branch needs there)."""
    if hasattr(module, name):
        return getattr(module, name)  # type: ignore[no-any-return]
    for node in ast.walk(ast.parse(script.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and name in [a.name for a in node.names]
        ):
            return getattr(importlib.import_module(node.module), name)  # type: ignore[no-any-return]
    raise AssertionError(f"{script.name} does not import {name}")


def params_read(script: Path) -> dict[str, set[str] | None]:
    """Per params section the script loads (``load(SomeParams)``): the keys it reads, or None
    where it hands the whole section on (to ``load_from_params``, say) and so reads them all."""
    module = stage_module(script)
    text = script.read_text()
    read: dict[str, set[str] | None] = {}
    for cls_name in set(re.findall(r"\bload\((\w+)\)", text)):
        section = imported_class(script, module, cls_name).SECTION
        keys: set[str] | None = set(re.findall(rf"\bload\({cls_name}\)\.(\w+)", text))
        whole = re.search(rf"\bload\({cls_name}\)(?![.\w])", text)
        var = re.search(rf"^\s*(\w+) = load\({cls_name}\)$", text, re.MULTILINE)
        if var:
            uses = re.findall(rf"\b{var.group(1)}\b(\.\w+)?", text)
            keys |= {u[1:] for u in uses if u}  # type: ignore[operator]
            whole = len([u for u in uses if not u]) > 1  # more than the assignment itself
        read[section] = None if whole else keys
    return read


def test_params_deps_are_what_the_script_reads() -> None:
    for name, stage in stages().items():
        read = params_read(ROOT / stage["cmd"].split()[1])
        listed: dict[str, set[str]] = {}
        for entry in stage.get("params", []):
            section, _, key = entry.partition(".")
            listed.setdefault(section, set())
            if key:
                listed[section].add(key)
        assert set(read) == set(listed), name
        for section, keys in read.items():
            # a whole section listed covers any read; a listed key must be read, and the reverse
            if listed[section]:
                assert keys is not None, (name, section, "reads the whole section")
                top = {k.split(".")[0] for k in listed[section]}
                assert keys == top, (name, section, keys ^ top)


def cmd_paths(cmd: str) -> dict[str, str]:
    """``--name PATH`` pairs of a stage's cmd."""
    words = cmd.split()[2:]
    assert len(words) % 2 == 0 and all(w.startswith("--") for w in words[::2]), cmd
    return {k[2:]: v for k, v in zip(words[::2], words[1::2], strict=True)}


def test_cmd_paths_are_exactly_the_deps_and_outs() -> None:
    """What a stage reads is its INPUTS' paths, what it writes its OUTPUTS'; those are
    exactly the stage's data deps and its outs, metrics and plots (a param naming a path,
    such as traces.transcoders, is a dep through ``${...}`` and read through its params)."""
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages().items():
        script = ROOT / stage["cmd"].split()[1]
        module = stage_module(script)
        paths = cmd_paths(stage["cmd"])
        assert set(paths) == set(module.INPUTS) | set(module.OUTPUTS), name
        spec = raw[name.split("@")[0]]
        from_params = {interpolate(d) for d in spec.get("do", spec)["deps"] if d.startswith("${")}
        data_deps = {d for d in stage["deps"] if not d.endswith(".py")} - from_params
        outs = set()
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            outs.add(out if isinstance(out, str) else next(iter(out)))
        assert {paths[k] for k in module.INPUTS} == data_deps, name
        assert {paths[k] for k in module.OUTPUTS} == outs, name


def test_stages_name_no_data_path() -> None:
    """Paths come only from the cmd: no stage script or library module spells one."""
    for path in [*(ROOT / "stages").glob("*.py"), *(ROOT / "src/steerpipe").rglob("*.py")]:
        assert not re.search(r"[\"']data/", path.read_text()), path


def test_every_dep_exists_or_is_produced() -> None:
    produced = set()
    for stage in stages().values():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            produced.add(out if isinstance(out, str) else next(iter(out)))
    for name, stage in stages().items():
        for dep in stage["deps"]:
            assert dep in produced or (ROOT / dep).exists(), (name, dep)


def test_the_runtime_never_imports_the_presets() -> None:
    """Presets and stand-ins live outside the stages' import path: editing them re-runs nothing."""
    for path in [*(ROOT / "stages").glob("*.py"), *PACKAGE.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names]
                assert not [n for n in names if n.split(".")[0] == "steerpipe_presets"], path


IMPORT_PROBE = """
import gc, runpy, sys
from pathlib import Path
gc.disable()  # as config.py does while a stage imports
def imported(script):
    runpy.run_path(str(script), run_name="imported")  # its imports, not its main
for script in sys.argv[2:]:
    imported(script)
    assert "torch" not in sys.modules, script
for script in sorted(Path(sys.argv[1]).glob("*.py")):
    imported(script)
    assert "transformers.modeling_utils" not in sys.modules, script
"""

LIGHT_STAGES = ("judge", "neuron_report", "questions", "report", "sweep_kl")


def test_stages_import_the_model_code_only_to_load_a_model() -> None:
    """Importing transformers' modeling code takes about 2 s of a stage's start-up: no stage
    imports it until it loads a model (``PreTrainedModel`` is imported for annotations only,
    ruff's TID253), and the stages that read only tables do not import torch either."""
    import subprocess

    light = [str(ROOT / "stages" / f"{name}.py") for name in LIGHT_STAGES]
    args = [sys.executable, "-c", IMPORT_PROBE, str(ROOT / "stages"), *light]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_generator_leaves_dvc_yaml_and_the_docs_as_they_are() -> None:
    assert write_deps.stale() == []


def test_a_missing_or_extra_dep_is_stale(tmp_path) -> None:
    text = (ROOT / "dvc.yaml").read_text()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "pipeline.md").write_text((ROOT / "docs" / "pipeline.md").read_text())
    dropped = text.replace("      - src/steerpipe/lm/hooks.py\n", "", 1)
    assert dropped != text
    (tmp_path / "dvc.yaml").write_text(dropped)
    assert write_deps.stale(tmp_path) == ["dvc.yaml: stage steps_dataset's code deps"]
    extra = text.replace(
        "      - stages/questions.py\n",
        "      - stages/questions.py\n      - src/steerpipe/steering/prepare.py\n",
    )
    (tmp_path / "dvc.yaml").write_text(extra)
    assert write_deps.stale(tmp_path) == ["dvc.yaml: stage questions's code deps"]
    assert write_deps.with_deps(dropped) == write_deps.with_deps(extra) == text


def test_imports_of_a_package_reach_its_modules(tmp_path) -> None:
    script = tmp_path / "s.py"
    script.write_text("from steerpipe.lm import gpus, models\nimport steerpipe.stats\n")
    found = {str(p.relative_to(PACKAGE)) for p in write_deps.imported_files(script)}
    assert found == {"lm/gpus.py", "lm/models.py", "stats.py"}
    script.write_text("from steerpipe.nowhere import x\n")
    with pytest.raises(ValueError, match="no module steerpipe.nowhere"):
        write_deps.imported_files(script)


def test_package_inits_hold_only_a_docstring() -> None:
    """They run on every import but are no stage's dep: nothing in them may change an output
    (the root's ``__version__`` aside)."""
    for init in PACKAGE.rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        assert body and isinstance(body[0], ast.Expr), init  # the docstring
        rest = [ast.unparse(node) for node in body[1:]]
        assert rest == (["__version__ = '0.1.0'"] if init.parent == PACKAGE else []), init


def subpackage(path: str) -> str:
    """The concern of a module: its folder under steerpipe/, or ``steerpipe`` for the top."""
    parts = Path(path).relative_to("src/steerpipe").parts
    return parts[0] if len(parts) > 1 else "steerpipe"


# which concern may import which: the shared top (config, storage, plots, stats, gym) and lm/
# under both experiments, claude/ beside them, results/ over the experiments' outputs
ALLOWED = {
    "steerpipe": {"steerpipe"},
    "lm": {"steerpipe", "lm"},
    "claude": {"steerpipe", "claude"},
    "steering": {"steerpipe", "lm", "claude", "steering"},
    "transcoders": {"steerpipe", "lm", "transcoders"},
    "results": {"steerpipe", "steering", "results"},
}


def test_concerns_depend_one_way() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if path.name == "__init__.py":
            continue
        for dep in write_deps.imported_files(path):
            used = subpackage(str(dep.relative_to(ROOT)))
            assert used in ALLOWED[subpackage(rel)], (rel, str(dep.relative_to(ROOT)))


def test_experiment_b_runs_nothing_of_experiment_a() -> None:
    """Editing how experiment A chooses its examples (or anything else of it) leaves
    experiment B's stages up to date."""
    # the stages a new question set re-runs, and the transcoder, which reads no questions
    for name in sorted(EXPERIMENT_B | {"transcoder"}):
        stage = stages()[name]
        code = [d for d in stage["deps"] if d.startswith("src/")]
        assert code, name
        assert not [d for d in code if subpackage(d) in ("steering", "claude")], name


def test_stage_scripts_are_short() -> None:
    for script in sorted((ROOT / "stages").glob("*.py")):
        assert len(script.read_text().splitlines()) <= 100, script.name


def test_no_two_functions_share_a_name() -> None:
    """One name per function: a name found in two modules would say two things."""
    seen: dict[str, str] = {}
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "stages").glob("*.py")]):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name != "main":
                where = str(path.relative_to(ROOT))
                assert node.name not in seen, (node.name, seen.get(node.name), where)
                seen[node.name] = where
