"""dvc.yaml: every stage lists exactly the code it runs and the params sections it reads.

The code a stage runs is its script plus every steerpipe module it imports, transitively;
a module missing from deps would let an edit to it go unnoticed by ``dvc repro``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

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


def test_params_deps_cover_what_the_script_reads() -> None:
    for name, stage in stages().items():
        script = (ROOT / stage["cmd"].split()[1]).read_text()
        read = set(re.findall(r'load_params\("(\w+)"\)', script))
        listed = {p.split(".")[0] for p in stage.get("params", [])}
        assert read == listed, name
        # a stage listing only some keys of a section must not read the others
        for section in read:
            keys = {p.split(".", 1)[1] for p in stage["params"] if p.startswith(section + ".")}
            direct = set(re.findall(rf'load_params\("{section}"\)\["(\w+)"\]', script))
            var = re.search(rf'(\w+) = load_params\("{section}"\)', script)
            via_var = set(re.findall(rf'\b{var.group(1)}\["(\w+)"\]', script)) if var else set()
            if keys:
                assert direct | via_var <= keys, (name, section, (direct | via_var) - keys)


def test_every_dep_exists_or_is_produced() -> None:
    produced = set()
    for stage in stages().values():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            produced.add(out if isinstance(out, str) else next(iter(out)))
    for name, stage in stages().items():
        for dep in stage["deps"]:
            assert dep in produced or (ROOT / dep).exists(), (name, dep)
