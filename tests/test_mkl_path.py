"""steerpipe.mkl_path: MKL's vendor check answered, so that its features choose its path."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from steerpipe import mkl_path
from steerpipe.lm.models import load_model

CC = shutil.which(os.environ.get("CC", "cc"))
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")

# What a process sees where it looks the function up, as mkl_path.vendor_check_answered does:
# without `site` (-S), so that only the .pth under test can load it; steerpipe's folder is put
# on the path by hand (mkl_path imports the standard library only).
SRC = str(Path(mkl_path.__file__).parents[1])
LOOKUP = (
    "import site, sys; site.addsitedir(sys.argv[1]); sys.path.insert(0, sys.argv[2]); "
    "from steerpipe.mkl_path import vendor_check_answered; print(vendor_check_answered())"
)


def environment(**env: str) -> dict[str, str]:
    """This process's environment and ``env``, with MKL's vendor check answered unless
    ``env`` says otherwise: the tests check the installation, not the caller's choice."""
    return {k: v for k, v in os.environ.items() if k != mkl_path.KEEP_CHECK} | env


def lookup(site_dir: Path, **env: str) -> str:
    run = subprocess.run(
        [sys.executable, "-S", "-c", LOOKUP, str(site_dir), SRC],
        capture_output=True, text=True, check=True, env=environment(**env),
    )  # fmt: skip
    assert run.stderr == ""  # site reports a failing .pth line on stderr and goes on
    return run.stdout.strip()


@needs_cc
def test_the_pth_file_loads_the_answer_into_the_global_symbols(tmp_path: Path) -> None:
    assert CC is not None
    assert lookup(tmp_path) == "False"
    pth = mkl_path.install(tmp_path, tmp_path, CC)
    assert pth == tmp_path / mkl_path.PTH and (tmp_path / mkl_path.LIBRARY).exists()
    assert lookup(tmp_path) == "True"
    assert lookup(tmp_path, **{mkl_path.KEEP_CHECK: "1"}) == "False"
    (tmp_path / mkl_path.LIBRARY).unlink()  # a .venv whose library is gone still starts
    assert lookup(tmp_path) == "False"


def gemm_bits(**env: str) -> str:
    """A hash of one float32 matrix product's bits in a new process of this environment."""
    code = (
        "import hashlib, torch; g = torch.Generator().manual_seed(0); "
        "a, b = torch.randn(90, 576, generator=g), torch.randn(576, 1536, generator=g); "
        "print(hashlib.sha1((a @ b).numpy().tobytes()).hexdigest())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env=environment(**env),
    )  # fmt: skip
    return run.stdout.strip()


CPUINFO = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
HAS_AVX512 = platform.machine() == "x86_64" and " avx512f" in CPUINFO


@pytest.mark.skipif(
    not (HAS_AVX512 and "BLAS_INFO=mkl" in torch.__config__.show()),
    reason="an x86 CPU with AVX-512 and torch on MKL",
)
def test_mkl_runs_a_wider_path_than_avx2_on_a_cpu_with_avx512() -> None:
    # MKL_ENABLE_INSTRUCTIONS caps the path only where MKL has passed its vendor check, so the
    # bits move with it on an Intel CPU, and on an AMD one only with the answer loaded
    # (scripts/setup.sh installs it); without it both are MKL's AVX2 path on an AMD CPU.
    amd = mkl_path.avx2_path(CPUINFO, platform.machine())
    if amd and CC is None:
        pytest.skip("no C compiler: MKL keeps its vendor check on this AMD CPU")
    widest, capped = gemm_bits(), gemm_bits(MKL_ENABLE_INSTRUCTIONS="AVX2")
    assert widest != capped, "MKL runs its AVX2 path: scripts/setup.sh answers its vendor check"
    if amd:  # MKL's own check: its AVX2 path
        assert gemm_bits(**{mkl_path.KEEP_CHECK: "1"}) == capped


INTEL = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"
ZEN3 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx avx2 fma\n"
ZEN4 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_bf16\n"


def test_only_an_amd_cpu_with_avx512_is_held_to_the_avx2_path() -> None:
    assert mkl_path.avx2_path(ZEN4, "x86_64")
    assert not mkl_path.avx2_path(ZEN3, "x86_64")  # AVX2 is what it has
    assert not mkl_path.avx2_path(INTEL, "x86_64")
    assert not mkl_path.avx2_path(ZEN4, "aarch64")


def mkl_warnings(model_dir: Path) -> list[str]:
    """The warnings about MKL's path that loading the tiny model on the CPU gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(str(model_dir), random_init=True)
    return [str(w.message) for w in caught if "MKL" in str(w.message)]


def test_loading_a_model_on_the_cpu_warns_where_mkl_runs_its_avx2_path(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(mkl_path.KEEP_CHECK, raising=False)
    monkeypatch.setattr(mkl_path, "avx2_path", lambda cpuinfo, machine: True)
    monkeypatch.setattr(mkl_path, "vendor_check_answered", lambda: False)
    (warned,) = mkl_warnings(tiny_model_dir)
    assert warned.startswith("MKL runs its AVX2 path") and "python -m steerpipe.mkl_path" in warned
    monkeypatch.setenv(mkl_path.KEEP_CHECK, "1")  # asked for: silent
    assert mkl_warnings(tiny_model_dir) == []
    monkeypatch.delenv(mkl_path.KEEP_CHECK)
    monkeypatch.setattr(mkl_path, "vendor_check_answered", lambda: True)
    assert mkl_warnings(tiny_model_dir) == []
    monkeypatch.setattr(mkl_path, "vendor_check_answered", lambda: False)
    monkeypatch.setattr(mkl_path, "avx2_path", lambda cpuinfo, machine: False)
    assert mkl_warnings(tiny_model_dir) == []
