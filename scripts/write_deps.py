"""Writes dvc.yaml's code deps and docs/pipeline.md's module table from the stages' imports.

    python scripts/write_deps.py           # rewrite both in place (after adding an import)
    python scripts/write_deps.py --check   # exit 1, naming each stale stage or the table

A stage's code is its script and every steerpipe module it imports, transitively (an import
inside a function counts: it runs too). An edit to any of them must re-run the stage, and an
edit to any other module must not, so each stage lists exactly those files as deps. Package
``__init__.py`` files hold only a docstring (tests/test_dvc_yaml.py checks it), so they are
not deps. tests/test_dvc_yaml.py runs ``stale``: CI fails on a dvc.yaml this would change.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
TABLE_HEAD = "| module | stages it re-runs |"
_CODE_DEP = re.compile(r"^(\s+)- ((?:stages|src)/\S+\.py)$")
_STAGE = re.compile(r"^  (\w+):\s*$")


def imported_files(path: Path) -> set[Path]:
    """The steerpipe module files that ``path`` imports (``from steerpipe.a.b import c``
    gives ``a/b.py``, or ``a/b/c.py`` where ``a/b`` is a package and ``c`` a module in it)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[tuple[str, list[str]]] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [(node.module, [a.name for a in node.names])]
        elif isinstance(node, ast.Import):
            names = [(a.name, []) for a in node.names]
        for module, members in names:
            if module.split(".")[0] != "steerpipe":
                continue
            base = SRC / module.replace(".", "/")
            if base.with_suffix(".py").exists():
                found.add(base.with_suffix(".py"))
            elif base.is_dir():
                found |= {base / f"{m}.py" for m in members if (base / f"{m}.py").exists()}
            else:
                raise ValueError(f"{path}: no module {module}")
    return found


def code_closure(script: Path) -> list[str]:
    """Repository paths of ``script`` and the steerpipe modules it reaches: the script first,
    then the modules sorted."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += imported_files(path)
    modules = sorted(str(p.relative_to(ROOT)) for p in seen - {script})
    return [str(script.relative_to(ROOT)), *modules]


def stage_scripts(dvc_yaml: str) -> dict[str, Path]:
    """Each stage of dvc.yaml (a ``foreach`` stage once, by its own name) and its script,
    the second word of its ``cmd``."""
    spec = yaml.safe_load(dvc_yaml)["stages"]
    return {name: ROOT / s.get("do", s)["cmd"].split()[1] for name, s in spec.items()}


def with_deps(dvc_yaml: str) -> str:
    """dvc.yaml's text with each stage's code deps replaced by its ``code_closure``, where the
    first of them stood; every other line (data deps, params, comments) as it was."""
    scripts = stage_scripts(dvc_yaml)
    out: list[str] = []
    stage: str | None = None
    written: set[str] = set()
    for line in dvc_yaml.splitlines():
        match = _STAGE.match(line)
        if match:
            stage = match.group(1)
        dep = _CODE_DEP.match(line)
        if dep is None or stage is None:
            out.append(line)
        elif stage not in written:
            written.add(stage)
            out += [f"{dep.group(1)}- {p}" for p in code_closure(scripts[stage])]
    missing = set(scripts) - written
    if missing:
        raise ValueError(f"dvc.yaml: stage(s) {sorted(missing)} list no code deps to replace")
    return "\n".join(out) + "\n"


def module_table(dvc_yaml: str) -> list[str]:
    """The docs' table: each steerpipe module and the stages an edit to it re-runs."""
    spec = yaml.safe_load(dvc_yaml)["stages"]
    users: dict[str, set[str]] = {
        str(p.relative_to(SRC / "steerpipe")): set()
        for p in sorted((SRC / "steerpipe").rglob("*.py"))
        if p.name != "__init__.py"
    }
    for name, script in stage_scripts(dvc_yaml).items():
        runs = (
            [f"{name}@{item}" for item in spec[name]["foreach"]]
            if "foreach" in spec[name]
            else [name]
        )
        for path in code_closure(script)[1:]:
            users[str(Path(path).relative_to("src/steerpipe"))].update(runs)
    rows = [TABLE_HEAD, "|---|---|"]
    rows += [f"| `{m}` | {', '.join(sorted(s)) or '-'} |" for m, s in users.items()]
    return rows


def with_table(doc: str, dvc_yaml: str) -> str:
    """The doc with the rows under ``TABLE_HEAD`` replaced by ``module_table``."""
    lines = doc.splitlines()
    start = lines.index(TABLE_HEAD)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[:start] + module_table(dvc_yaml) + lines[end:]) + "\n"


def stale(root: Path = ROOT) -> list[str]:
    """What ``main`` would rewrite under ``root``: the stages whose code deps are not their
    closure, and the docs' table if it is out of date."""
    text = (root / "dvc.yaml").read_text()
    written = with_deps(text)
    fresh = yaml.safe_load(written)["stages"]
    now = yaml.safe_load(text)["stages"]
    found = [
        f"dvc.yaml: stage {name}'s code deps"
        for name in now
        if now[name].get("do", now[name])["deps"] != fresh[name].get("do", fresh[name])["deps"]
    ]
    doc = (root / "docs" / "pipeline.md").read_text()
    if with_table(doc, written) != doc:
        found.append("docs/pipeline.md: the module table")
    return found


def main(argv: list[str]) -> int:
    if "--check" in argv:
        found = stale()
        for item in found:
            print(f"stale: {item} (run python scripts/write_deps.py)", file=sys.stderr)
        return 1 if found else 0
    path = ROOT / "dvc.yaml"
    text = with_deps(path.read_text())
    path.write_text(text)
    doc = ROOT / "docs" / "pipeline.md"
    doc.write_text(with_table(doc.read_text(), text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
