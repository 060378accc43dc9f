"""Lets MKL, torch's BLAS on x86, choose its code path by the CPU's features on AMD CPUs too.

    .venv/bin/python -m steerpipe.mkl_path     # scripts/setup.sh runs it

MKL asks for the CPU's vendor before its features: on an AMD CPU it runs its AVX2 kernels
even where the CPU has AVX-512. On the AMD EPYC (Zen 4) 2-core machines that made the pipeline
slower than it need be, and moved the last bits of every matrix product, so experiment B's
outputs there were not the committed ones (docs/pipeline.md, "Reproducibility").
``main`` builds a library of one function, ``mkl_serv_intel_cpu_true``, that answers MKL's
vendor check with yes, and a ``.pth`` file that loads it into every Python of this
environment at start-up, before anything imports torch; MKL's own feature checks then pick its
path, as on an Intel CPU. On an Intel CPU it changes nothing. ``STEERPIPE_MKL_VENDOR_CHECK=1``
in the environment keeps MKL's own check. Without a C compiler (``$CC``, else ``cc``) it says
so and installs nothing. ``warn_if_avx2_path`` (``lm.models.load_model`` calls it) says when a
model runs on an AMD CPU with AVX-512 whose MKL has not had the answer.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

FUNCTION = "mkl_serv_intel_cpu_true"
SOURCE = f"int {FUNCTION}(void) {{ return 1; }}\n"
LIBRARY = "libsteerpipe_mkl_path.so"
PTH = "steerpipe_mkl_path.pth"
KEEP_CHECK = "STEERPIPE_MKL_VENDOR_CHECK"


def build(library: Path, cc: str) -> None:
    """Compiles the vendor answer into the shared library ``library``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "mkl_path.c")
        source.write_text(SOURCE)
        subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True)


def pth_line(library: Path) -> str:
    """The ``.pth`` line that loads ``library`` into the process's global symbols.

    ``site`` runs a ``.pth`` line that starts with ``import`` as code. RTLD_GLOBAL puts the
    function ahead of MKL's own when torch's library is loaded later: its calls to it are
    resolved through the global scope first."""
    return (
        f"import os, ctypes; os.environ.get({KEEP_CHECK!r}) == '1' or not "
        f"os.path.exists({str(library)!r}) or ctypes.CDLL({str(library)!r}, os.RTLD_GLOBAL)\n"
    )


def install(site_packages: Path, lib_dir: Path, cc: str) -> Path:
    """Builds the library in ``lib_dir`` and the ``.pth`` file that loads it in
    ``site_packages``; returns the ``.pth`` file."""
    library = lib_dir.resolve() / LIBRARY
    build(library, cc)
    pth = site_packages / PTH
    pth.write_text(pth_line(library))
    return pth


def vendor_check_answered() -> bool:
    """Whether this process's global symbols answer MKL's vendor check with yes: the library
    loaded (on an Intel CPU, MKL's own answer where torch's symbols are global)."""
    answer = getattr(ctypes.CDLL(None), FUNCTION, None)
    return answer is not None and answer() == 1


def avx2_path(cpuinfo: str, machine: str) -> bool:
    """Whether MKL's own check would hold this CPU to its AVX2 path: an x86 AMD CPU with
    AVX-512 (``cpuinfo``: the text of /proc/cpuinfo, ``machine``: ``platform.machine()``)."""
    return machine == "x86_64" and "AuthenticAMD" in cpuinfo and " avx512f" in cpuinfo


def warn_if_avx2_path() -> None:
    """Warns where MKL runs its AVX2 path on a CPU that has AVX-512, unless asked to."""
    info = Path("/proc/cpuinfo")
    if os.environ.get(KEEP_CHECK) == "1" or not info.exists() or vendor_check_answered():
        return
    if avx2_path(info.read_text(), platform.machine()):
        warnings.warn(
            "MKL runs its AVX2 path on this AMD CPU with AVX-512: slower, and the last bits of "
            "every float differ from the committed outputs'. `python -m steerpipe.mkl_path` with "
            "this environment's Python lets it take its AVX-512 path (needs a C compiler; "
            f"docs/pipeline.md, Reproducibility); {KEEP_CHECK}=1 silences this.",
            RuntimeWarning,
            stacklevel=3,
        )


def main() -> None:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        print("mkl_path: no C compiler; MKL keeps its vendor check (slower on AMD CPUs)")
        return
    site_packages = Path(sysconfig.get_paths()["purelib"])
    install(site_packages, Path(sys.prefix, "lib"), cc)


if __name__ == "__main__":
    main()
