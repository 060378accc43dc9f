"""Which GPU a stage runs on, so that stages running side by side never share one.

With ``model.device: auto`` a stage takes a GPU that no other running stage holds: it locks
a file named after the GPU's UUID (``fcntl.flock``) and keeps the lock until the process
exits, when the kernel releases it, even after a crash or a kill. Where every GPU is held,
the stage waits for one to come free. ``dvc queue start -j N`` on a machine of N GPUs thus
runs N experiments at once, one a GPU, with no server to start. A model placed over several
GPUs (``model.device_map``) holds all of them. ``cuda`` or ``cuda:1`` written out is taken
as written, without a lock.

The locks live in ``$STEERPIPE_GPU_LOCKS`` (default: a folder of the user's in the system's
temporary folder), which every process of the machine sees: DVC runs queued experiments in
workspaces of their own, so the lock folder cannot be inside the repository.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import torch

# the lock files this process holds, open for its lifetime; closing one releases its GPU
_held: dict[str, IO[bytes]] = {}


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"steerpipe-gpus-{os.getuid()}"
    return Path(os.environ.get("STEERPIPE_GPU_LOCKS", default))


def gpu_ids() -> list[str]:
    """One name per visible GPU, the same in every process whatever its
    ``CUDA_VISIBLE_DEVICES``: the device's UUID where torch gives it."""
    ids = []
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        ids.append(f"GPU-{uuid}" if uuid is not None else f"index-{i}")
    return ids


def _try_lock(name: str, folder: Path) -> bool:
    if name in _held:
        return True
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / f"{name}.lock", "wb")  # noqa: SIM115  # held open until exit
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return False
    _held[name] = f
    return True


def _wait(names: list[str], folder: Path, message: str, poll_s: float) -> tuple[int, bool]:
    """The index of the first of ``names`` that this process could lock, waiting while all are
    held (saying so once on stderr); and whether it had to wait."""
    waited = False
    while (i := next((i for i, n in enumerate(names) if _try_lock(n, folder)), None)) is None:
        if not waited:
            print(message, file=sys.stderr)
            waited = True
        time.sleep(poll_s)
    return i, waited


def claim_one(ids: list[str], *, folder: Path | None = None, poll_s: float = 5.0) -> int:
    """The index of a GPU in ``ids`` that this process now holds; waits while all are held."""
    if not ids:
        raise ValueError("no GPUs to claim")
    folder = folder or lock_dir()
    message = (
        f"gpus: all {len(ids)} GPUs are held by other stages (locks in {folder}); "
        "waiting for one to come free"
    )
    i, waited = _wait(ids, folder, message, poll_s)
    if waited:
        print(f"gpus: {ids[i]} came free", file=sys.stderr)
    return i


def claim_all(ids: list[str], *, folder: Path | None = None, poll_s: float = 5.0) -> None:
    """Hold every GPU in ``ids``, taking them in a fixed order (two processes that both want
    all of them cannot each end up holding some and waiting for the rest)."""
    folder = folder or lock_dir()
    for name in sorted(ids):
        _wait([name], folder, f"gpus: waiting for {name}, held by another stage", poll_s)


def release_all() -> None:
    """Give back every GPU this process holds (process exit does the same)."""
    for f in _held.values():
        f.close()
    _held.clear()


def pick_device(device: str, *, spread: bool = False) -> str:
    """The torch device for ``model.device``: ``auto`` is a GPU that no other running stage
    holds (``cuda:i``), or ``cpu`` where there is none. ``spread`` (a ``device_map`` model)
    holds every GPU and returns ``cuda``."""
    if device != "auto" and not spread:
        return device
    ids = gpu_ids() if torch.cuda.is_available() else []
    if not ids:
        return "cpu"
    if spread:
        claim_all(ids)
        return "cuda"
    return f"cuda:{claim_one(ids)}"
