"""config: every params.yaml section is a dataclass with exactly its keys; bad values are named.

The sections' classes live next to the code they configure (library modules, or the stage
script of a section only one stage reads); params.yaml names each one on the line above its
section, and ``SECTIONS`` is read from those lines, so a label that is wrong fails here.
"""

from __future__ import annotations

import dataclasses
import importlib
import platform
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_type_hints

import pytest
import yaml
from test_dvc_yaml import stage_module
from tiny import ROOT

from steerpipe.claude.message_batches import ClaudeParams
from steerpipe.config import StageError, load, parse
from steerpipe.lm.models import ModelParams
from steerpipe.steering.generated_steps import StepsParams
from steerpipe.steering.judge import JudgeParams
from steerpipe.steering.prepare import PrepareParams
from steerpipe.steering.sampling import SamplingParams
from steerpipe_presets.presets import flatten, load_preset, merge

LABEL = re.compile(r"^# (\w+) \((\S+\.py)\)$")


def labelled_classes() -> dict[str, type]:
    """Each top-level section of params.yaml and the class its label line names: ``# Class
    (path)``, a library module under src/ or a stage script."""
    lines = (ROOT / "params.yaml").read_text().splitlines()
    found: dict[str, type] = {}
    for before, line in zip(lines, lines[1:], strict=False):
        section = re.match(r"^(\w+):", line)
        if not section:
            continue
        label = LABEL.match(before)
        assert label, f"params.yaml: no '# Class (path)' line above section {section.group(1)}"
        name, path = label.groups()
        if path.startswith("src/"):
            module = importlib.import_module(path[4:-3].replace("/", "."))
        else:
            module = stage_module(ROOT / path)
        found[section.group(1)] = getattr(module, name)
    return found


SECTIONS: list[type] = list(labelled_classes().values())


def test_each_label_names_the_class_of_its_section() -> None:
    for section, cls in labelled_classes().items():
        assert section == cls.SECTION, (section, cls)  # type: ignore[attr-defined]


def assert_same_keys(cls: type, node: dict[str, Any], key: str) -> None:
    """The fields of ``cls`` are exactly the keys of ``node``, nested sections included."""
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    assert fields == set(node), (key, fields ^ set(node))
    for name in fields:
        if dataclasses.is_dataclass(hints[name]):
            assert_same_keys(hints[name], node[name], f"{key}.{name}")


def test_every_section_is_a_dataclass_with_exactly_its_keys() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert [cls.SECTION for cls in SECTIONS] == list(params)  # type: ignore[attr-defined]
    for cls in SECTIONS:
        assert_same_keys(cls, params[cls.SECTION], cls.SECTION)  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", [*SECTIONS, ClaudeParams], ids=lambda c: c.SECTION)
def test_the_repository_params_parse(cls: type) -> None:
    obj = load(cls, ROOT / "params.yaml")
    assert dataclasses.is_dataclass(obj) and type(obj) is cls


def test_every_preset_gives_valid_params() -> None:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for path in sorted((ROOT / "presets").glob("*.yaml")):
        preset = load_preset(path.stem, ROOT)
        merged = merge(base, preset["params"])
        keys = set(flatten(base))  # no new keys (null may replace a mapping: paper-a's config)
        prefixes = {k.rsplit(".", i)[0] for k in keys for i in range(k.count(".") + 1)}
        assert set(flatten(merged)) <= keys | prefixes, path.name
        for cls in SECTIONS:
            parse(cls, merged[cls.SECTION], cls.SECTION)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Inner:
    SECTION: ClassVar[str] = "outer.inner"
    n: int


@dataclass(frozen=True)
class Outer:
    SECTION: ClassVar[str] = "outer"
    rate: float
    flag: bool
    name: str
    choice: Literal["a", "b"]
    layer: Literal["auto"] | int
    cut: float | None
    layers: list[int]
    table: dict[str, str]
    inner: Inner


GOOD: dict[str, Any] = {
    "rate": 1,
    "flag": False,
    "name": "x",
    "choice": "b",
    "layer": "auto",
    "cut": None,
    "layers": [1, 2],
    "table": {"k": "v"},
    "inner": {"n": 3},
}


def test_parse_types() -> None:
    obj = parse(Outer, GOOD, "outer")
    assert obj == Outer(1.0, False, "x", "b", "auto", None, [1, 2], {"k": "v"}, Inner(3))
    assert isinstance(obj.rate, float)  # an int where a float is asked becomes a float
    assert parse(Outer, {**GOOD, "layer": 4, "cut": 0.5}, "outer").layer == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate": "fast"}, "outer.rate must be a number, got 'fast'"),
        ({"flag": 1}, "outer.flag must be true or false, got 1"),
        ({"choice": "c"}, "outer.choice must be 'a' or 'b', got 'c'"),
        ({"layer": "best"}, "outer.layer must be 'auto' or an integer, got 'best'"),
        ({"layer": True}, "outer.layer must be 'auto' or an integer, got True"),
        ({"layers": [1, "2"]}, "outer.layers[1] must be an integer, got '2'"),
        ({"layers": 3}, "outer.layers must be a list of (an integer), got 3"),
        ({"inner": {"n": 2.5}}, "outer.inner.n must be an integer, got 2.5"),
        ({"inner": {}}, "outer.inner.n is missing"),
        ({"extra": 1}, "outer.extra is not a parameter"),
        ({"table": {"k": 3}}, "outer.table.k must be a string, got 3"),
        ({"inner": 3}, "outer.inner must be a mapping of its keys, got 3"),
    ],
)
def test_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(StageError) as e:
        parse(Outer, {**GOOD, **change}, "outer")
    assert message in str(e.value)


def test_ranges_and_cross_field_rules_are_checked() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(StageError, match=r"sampling.top_p must be in \(0, 1\]"):
        parse(SamplingParams, {**params["sampling"], "top_p": 1.5}, "sampling")
    with pytest.raises(StageError, match="prepare.kinds must be two different kinds"):
        parse(PrepareParams, {**params["prepare"], "kinds": ["other", "other"]}, "prepare")
    with pytest.raises(StageError, match="prepare.kinds\\[1\\] must be"):
        parse(PrepareParams, {**params["prepare"], "kinds": ["other", "answer"]}, "prepare")
    with pytest.raises(StageError, match="steps.claude.max_rounds must be at least 1"):
        claude = {**params["steps"]["claude"], "max_rounds": 0}
        parse(StepsParams, {**params["steps"], "claude": claude}, "steps")
    with pytest.raises(StageError, match="judge.max_rounds must be at least 1"):
        parse(JudgeParams, {**params["judge"], "max_rounds": 0}, "judge")
    with pytest.raises(StageError, match="model.device must be"):
        parse(ModelParams, {**params["model"], "device": "gpu"}, "model")


def test_a_missing_section_is_named(tmp_path) -> None:
    (tmp_path / "params.yaml").write_text("model: {}\n")
    with pytest.raises(StageError, match="has no section 'sampling'"):
        load(SamplingParams, tmp_path / "params.yaml")
    with pytest.raises(StageError, match="model.name is missing"):
        load(ModelParams, tmp_path / "params.yaml")


GC_PROBE = """
import gc
from steerpipe.config import collector_paused, run_stage
print("loading", gc.isenabled())
def main():
    print("running", gc.isenabled(), gc.get_freeze_count() > 0)
    before = gc.get_freeze_count()
    with collector_paused():  # as load_model makes a model
        print("paused", gc.isenabled())
        made = [[] for _ in range(1000)]
    print("after", gc.isenabled(), gc.get_freeze_count() >= before + len(made))
run_stage(main)
"""


@pytest.mark.parametrize("folder", ["stages", "scripts"])
def test_a_stage_loads_with_the_collector_off_and_runs_with_it_on(tmp_path, folder) -> None:
    """config.py turns the cyclic collector off while a stage script (one in stages/) imports,
    and run_stage freezes what was imported and turns it back on; collector_paused does the
    same around a model's loading. Other programs keep their collector, and nothing of theirs
    is frozen by collector_paused."""
    import subprocess
    import sys

    script = tmp_path / folder / "probe.py"
    script.parent.mkdir()
    script.write_text(GC_PROBE)
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, check=True)
    stage = folder == "stages"
    assert out.stdout.split("\n")[:4] == [
        f"loading {not stage}",
        "running True True",
        f"paused {not stage}",
        f"after True {stage}",
    ]


MALLOC_PROBE = """
import ctypes
import steerpipe.config

class Info(ctypes.Structure):  # glibc's struct mallinfo2 (malloc.h)
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
block = libc.malloc(64 << 20)  # a batch's logits, say
mapped = libc.mallinfo2().hblkhd >= 64 << 20
libc.free(block)
print("mapped", mapped, "kept", libc.mallinfo2().arena >= 64 << 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize(
    ("folder", "defaults", "expected"),
    [
        ("stages", None, "mapped False kept True"),
        ("stages", "1", "mapped True kept False"),  # STEERPIPE_MALLOC_DEFAULTS=1: glibc's own
        ("scripts", None, "mapped True kept False"),  # not a stage: left alone
    ],
)
def test_a_stage_keeps_the_memory_it_frees(tmp_path, folder, defaults, expected) -> None:
    """In a stage, a 64 MiB block comes from malloc's heap instead of a mapping of its own, and
    stays there when freed (config.keep_freed_memory): the next tensor reuses its pages
    instead of the kernel zeroing new ones."""
    import os
    import subprocess
    import sys

    script = tmp_path / folder / "probe.py"
    script.parent.mkdir()
    script.write_text(MALLOC_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "STEERPIPE_MALLOC_DEFAULTS"}
    env |= {"STEERPIPE_MALLOC_DEFAULTS": defaults} if defaults else {}
    out = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == expected
