"""dvc.yaml: every stage lists exactly the code it runs and the params sections it reads.

The code a stage runs is its script plus every steerpipe module it imports, transitively;
a module missing from deps would let an edit to it go unnoticed by ``dvc repro``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[1]


def steerpipe_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("steerpipe"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("steerpipe")}
    return found


def code_closure(script: Path) -> set[str]:
    """Repository paths of the script and the steerpipe modules it reaches."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        rel = str(path.relative_to(ROOT))
        if rel in seen:
            continue
        seen.add(rel)
        for mod in steerpipe_imports(path):
            todo.append(ROOT / "src" / (mod.replace(".", "/") + ".py"))
    return seen


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
        code_deps = {d for d in stage["deps"] if d.endswith(".py")}
        assert code_deps == code_closure(script), name


def stage_module(script: Path) -> ModuleType:
    """A stage script imported as a module (its ``main`` does not run)."""
    name = f"stage_{script.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def params_read(script: Path) -> dict[str, set[str] | None]:
    """Per params section the script loads (``load(SomeParams)``): the keys it reads, or None
    where it hands the whole section on (to ``load_from_params``, say) and so reads them all."""
    module = stage_module(script)
    text = script.read_text()
    read: dict[str, set[str] | None] = {}
    for cls_name in set(re.findall(r"\bload\((\w+)\)", text)):
        section = getattr(module, cls_name).SECTION
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
    for path in [*(ROOT / "stages").glob("*.py"), *(ROOT / "src/steerpipe").glob("*.py")]:
        found = steerpipe_imports(path)
        assert not {m for m in found if m.split(".")[0] == "steerpipe_presets"}, path


def module_table() -> list[str]:
    """docs/pipeline.md's table of which stages each steerpipe module re-runs, from the deps."""
    users: dict[str, set[str]] = {
        p.name: set() for p in sorted((ROOT / "src" / "steerpipe").glob("*.py"))
    }
    for name, stage in stages().items():
        for dep in stage["deps"]:
            if dep.startswith("src/steerpipe/"):
                users[Path(dep).name].add(name)
    rows = ["| module | stages |", "|---|---|"]
    rows += [f"| `{m}` | {', '.join(sorted(s)) or '-'} |" for m, s in users.items()]
    return rows


def test_the_docs_table_of_module_users_is_dvc_yamls() -> None:
    text = (ROOT / "docs" / "pipeline.md").read_text().splitlines()
    start = text.index("| module | stages |")
    assert text[start : start + len(module_table())] == module_table()
    assert not text[start + len(module_table())].startswith("|")  # no stale rows after it
