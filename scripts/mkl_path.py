"""Lets MKL, torch's BLAS on x86, choose its code path by the CPU's features on AMD CPUs too.

    .venv/bin/python scripts/mkl_path.py     # scripts/setup.sh runs it

MKL asks for the CPU's vendor before its features: on an AMD CPU it runs its AVX2 kernels
even where the CPU has AVX-512. On the AMD EPYC (Zen 4) 2-core machines that made the pipeline
half again as slow as on the Intel ones, and moved the last bits of every matrix product, so
experiment B's outputs there were not the committed ones (docs/pipeline.md, "Reproducibility").
This builds a library of one function, ``mkl_serv_intel_cpu_true``, that answers MKL's vendor
check with yes, and a ``.pth`` file that loads it into every Python of this environment at
start-up, before anything imports torch; MKL's own feature checks then pick its path, as on an
Intel CPU. On an Intel CPU it changes nothing. ``STEERPIPE_MKL_VENDOR_CHECK=1`` in the
environment keeps MKL's own check. Without a C compiler (``$CC``, else ``cc``) it says so and
installs nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"
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


def main() -> None:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        print("mkl_path: no C compiler; MKL keeps its vendor check (slower on AMD CPUs)")
        return
    site_packages = Path(sysconfig.get_paths()["purelib"])
    install(site_packages, Path(sys.prefix, "lib"), cc)


if __name__ == "__main__":
    main()
