"""scripts/mkl_path.py: MKL's vendor check answered, so that its features choose its path."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
import mkl_path  # noqa: E402

CC = shutil.which(os.environ.get("CC", "cc"))
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")

# What a process sees when it looks the function up in its global symbols, as torch's MKL
# does: without `site` (-S), so that only the .pth under test can put it there.
LOOKUP = (
    "import ctypes, site, sys; site.addsitedir(sys.argv[1]); "
    "f = getattr(ctypes.CDLL(None), 'mkl_serv_intel_cpu_true', None); "
    "print('absent' if f is None else f())"
)


def environment(**env: str) -> dict[str, str]:
    """This process's environment and ``env``, with MKL's vendor check answered unless
    ``env`` says otherwise: the tests check the installation, not the caller's choice."""
    return {k: v for k, v in os.environ.items() if k != mkl_path.KEEP_CHECK} | env


def lookup(site_dir: Path, **env: str) -> str:
    run = subprocess.run(
        [sys.executable, "-S", "-c", LOOKUP, str(site_dir)],
        capture_output=True, text=True, check=True, env=environment(**env),
    )  # fmt: skip
    assert run.stderr == ""  # site reports a failing .pth line on stderr and goes on
    return run.stdout.strip()


@needs_cc
def test_the_pth_file_loads_the_answer_into_the_global_symbols(tmp_path: Path) -> None:
    assert CC is not None
    assert lookup(tmp_path) == "absent"
    pth = mkl_path.install(tmp_path, tmp_path, CC)
    assert pth == tmp_path / mkl_path.PTH and (tmp_path / mkl_path.LIBRARY).exists()
    assert lookup(tmp_path) == "1"
    assert lookup(tmp_path, **{mkl_path.KEEP_CHECK: "1"}) == "absent"
    (tmp_path / mkl_path.LIBRARY).unlink()  # a .venv whose library is gone still starts
    assert lookup(tmp_path) == "absent"


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


def has_avx512() -> bool:
    return platform.machine() == "x86_64" and "avx512f" in Path("/proc/cpuinfo").read_text()


@pytest.mark.skipif(
    not (has_avx512() and "BLAS_INFO=mkl" in torch.__config__.show()),
    reason="an x86 CPU with AVX-512 and torch on MKL",
)
def test_mkl_runs_a_wider_path_than_avx2_on_a_cpu_with_avx512() -> None:
    # MKL_ENABLE_INSTRUCTIONS caps the path only where MKL has passed its vendor check, so the
    # bits move with it on an Intel CPU, and on an AMD one only with the answer loaded
    # (scripts/setup.sh installs it); without it both are MKL's AVX2 path on an AMD CPU.
    amd = "AuthenticAMD" in Path("/proc/cpuinfo").read_text()
    if amd and CC is None:
        pytest.skip("no C compiler: MKL keeps its vendor check on this AMD CPU")
    assert gemm_bits() != gemm_bits(MKL_ENABLE_INSTRUCTIONS="AVX2")
    if amd:  # MKL's own check: its AVX2 path
        kept = gemm_bits(**{mkl_path.KEEP_CHECK: "1"})
        assert kept == gemm_bits(MKL_ENABLE_INSTRUCTIONS="AVX2")
        assert kept != gemm_bits()
