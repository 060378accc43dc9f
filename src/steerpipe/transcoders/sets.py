"""Where a transcoder set lives: a folder of per-layer files, circuit-tracer's set, the hub.

    python -m steerpipe.transcoders.sets fetch facebook/crv-8b-instruct-transcoders \
        --file 'layer_{layer}.safetensors' --layers 0 9 18 27     # prints the local folder

- A folder: ``file.format(layer=L)`` in it, in any format of ``formats``.
- circuit-tracer (``circuit_tracer/transcoder/single_layer_transcoder.py``,
  ``utils/hf_utils.py``): a folder with ``config.yaml`` (``feature_input_hook``,
  ``feature_output_hook``, ``activation``, ``k``, optional ``transcoders``) and one
  safetensors per layer: ``W_enc``/``W_dec`` ``[d_transcoder, d_model]``, ``b_dec`` the output
  bias, optional ``W_skip`` (``x @ W_skip.T``) and ``activation_function.threshold`` (JumpReLU).
  TopK without ``k`` is k = 128 for ``facebook/crv-8b-instruct-transcoders``, as
  circuit-tracer hard-codes it.
- A hub repo id: the files of the requested layers, from the local HF cache first.

``traces.input_hook`` overrides the input hook of every format. Layers load one at a time
(``iter_layers``), so the host holds one layer's weights at most.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from steerpipe.config import StageError
from steerpipe.lm.hooks import parse_hook
from steerpipe.storage import read_tensors
from steerpipe.transcoders.formats import (
    CIRCUITS_SPARSITY,
    load_transcoder,
    log_frequency_of,
    need_field,
)
from steerpipe.transcoders.transcoder import Transcoder, need_tensors, place

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
CRV_TOPK = {"facebook/crv-8b-instruct-transcoders": 128}  # circuit-tracer's hard-coded k


def iter_layers(
    source: str | Path,
    file: str,
    layers: list[int],
    *,
    input_hook: str | None = None,
) -> Iterator[Transcoder]:
    """The transcoder of each layer of ``source`` (a local folder), one at a time:
    ``source / file.format(layer=L)``, or the layer files of circuit-tracer's ``config.yaml``.
    ``input_hook`` overrides what the files say."""
    folder = Path(source)
    if not folder.is_dir():
        raise StageError(f"traces.transcoders: {folder} is not a folder")
    config = _circuit_tracer_config(folder)
    for layer in layers:
        if config is not None:
            tc = _load_circuit_tracer(folder, config, file, layer)
        else:
            path = folder / file.format(layer=layer)
            if not path.exists():
                raise StageError(f"no transcoder for layer {layer}: {path} does not exist")
            tc = load_transcoder(path, layer)
        if input_hook:
            tc.input_hook = parse_hook(input_hook, where="traces.input_hook")[1]
            tc.meta["input_hook_from"] = "traces.input_hook"
        yield tc


def load_layers(
    source: str | Path, file: str, layers: list[int], *, input_hook: str | None = None
) -> dict[int, Transcoder]:
    return {tc.layer: tc for tc in iter_layers(source, file, layers, input_hook=input_hook)}


def read_log_frequency(source: str | Path, file: str, layer: int) -> torch.Tensor | None:
    """The log10 firing frequencies a transcoder file ships, without reading its weights
    (None where the format has none: circuit-tracer, sparsify)."""
    folder = Path(source)
    if _circuit_tracer_config(folder) is not None:
        return None
    return log_frequency_of(folder / file.format(layer=layer))


def placed_layers(
    source: str, file: str, layers: list[int], model: nn.Module, *, input_hook: str | None = None
) -> Iterator[Transcoder]:
    """``iter_layers`` of ``source`` (a folder or a hub id, ``resolve_source``), each checked
    against ``model`` and placed on its layer's device before the next one is read."""
    folder = resolve_source(source, file, layers)
    for tc in iter_layers(folder, file, layers, input_hook=input_hook):
        yield place(tc, model)


def resolve_source(
    source: str, file: str, layers: list[int], *, cache_dir: str | Path | None = None
) -> Path:
    """A local folder as it is; a hub repo id: its files for ``layers`` from the local HF cache,
    downloaded (only those files) when they are not there and the hub may be asked."""
    from huggingface_hub import snapshot_download

    from steerpipe.lm.models import hub_offline

    path = Path(source).expanduser()
    if path.exists():
        return path
    if not HUB_ID.match(source):
        raise StageError(f"traces.transcoders: {source!r} is neither a folder nor a hub repo id")
    patterns = ["config.yaml"]
    for layer in layers:
        rel = file.format(layer=layer)
        stem = rel.rsplit(".", 1)[0]
        patterns += [rel, f"{rel}/*", stem + CIRCUITS_SPARSITY]
    try:
        folder = Path(
            snapshot_download(
                source, allow_patterns=patterns, local_files_only=True, cache_dir=cache_dir
            )
        )
        if _has_layers(folder, file, layers):
            return folder
    except Exception:  # not cached (huggingface_hub's LocalEntryNotFoundError and kin)
        pass
    not_here = f"traces.transcoders {source!r}: the layer files are not in the local HF cache"
    if hub_offline():
        raise StageError(f"{not_here}, and HF_HUB_OFFLINE is set: give a local folder")
    try:
        folder = Path(snapshot_download(source, allow_patterns=patterns, cache_dir=cache_dir))
    except Exception as e:  # network, auth and missing-repo errors all end here
        raise StageError(f"{not_here}, and downloading them failed ({type(e).__name__})") from e
    if not _has_layers(folder, file, layers):
        raise StageError(f"traces.transcoders {source!r} has no files {file!r} for {layers}")
    return folder


def _has_layers(folder: Path, file: str, layers: list[int]) -> bool:
    config = _circuit_tracer_config(folder)
    if config is not None and "transcoders" in config:
        return True  # its layer files are named in the config and fetched when read
    return all((folder / file.format(layer=layer)).exists() for layer in layers)


def _hub_repo_of(folder: Path) -> str:
    """``org/name`` of a folder in the HF cache (``models--org--name/snapshots/<sha>``)."""
    repo = folder.resolve().parent.parent.name
    if not repo.startswith("models--"):
        return ""
    return repo.removeprefix("models--").replace("--", "/", 1)


def _circuit_tracer_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.yaml"
    if not path.exists():
        return None
    config = yaml.safe_load(path.read_text()) or {}
    kind = config.get("model_kind", "transcoder_set")
    if kind != "transcoder_set":
        raise StageError(f"{path}: model_kind {kind!r}: only per-layer transcoder sets are read")
    for name in ("feature_input_hook", "feature_output_hook"):
        need_field(config, name, path)
    return dict(config)


def _layer_file(folder: Path, config: dict[str, Any], file: str, layer: int) -> Path:
    entries = config.get("transcoders")
    if not entries:
        path = folder / file.format(layer=layer)
    elif layer >= len(entries):
        raise StageError(f"{folder / 'config.yaml'}: transcoders lists no layer {layer}")
    elif str(entries[layer]).startswith("hf://"):
        from huggingface_hub import hf_hub_download

        repo_path, _, query = str(entries[layer])[5:].partition("?")
        owner, name, rel = repo_path.split("/", 2)
        revision = query.split("revision=")[-1] if "revision=" in query else None
        try:
            path = Path(hf_hub_download(f"{owner}/{name}", rel, revision=revision))
        except Exception as e:
            raise StageError(f"{folder / 'config.yaml'}: cannot fetch {entries[layer]}") from e
    else:
        path = folder / str(entries[layer])
    if not path.exists():
        raise StageError(f"no transcoder for layer {layer}: {path} does not exist")
    return path


def _load_circuit_tracer(folder: Path, config: dict[str, Any], file: str, layer: int) -> Transcoder:
    path = _layer_file(folder, config, file, layer)
    where = str(folder / "config.yaml")
    tensors, _ = read_tensors(path)
    need_tensors(tensors, ("W_enc", "b_enc", "W_dec", "b_dec"), path)
    d_t, d_model = len(tensors["b_enc"]), len(tensors["b_dec"])
    for name in ("W_enc", "W_dec"):
        if tuple(tensors[name].shape) != (d_t, d_model):
            raise StageError(
                f"{path}: {name} is {tuple(tensors[name].shape)}; circuit-tracer stores it "
                f"[d_transcoder, d_model] = {(d_t, d_model)}"
            )
    threshold = tensors.get("activation_function.threshold", tensors.get("threshold"))
    activation = config.get("activation") or ("jumprelu" if threshold is not None else "relu")
    k = None
    if activation == "topk":
        k = config.get("k") or (int(tensors["k"]) if "k" in tensors else None)
        k = k or CRV_TOPK.get(_hub_repo_of(folder))
        if k is None:
            raise StageError(f"{folder / 'config.yaml'}: activation topk needs a field 'k'")
    elif activation == "jumprelu":
        if threshold is None:
            raise StageError(f"{path}: no tensor activation_function.threshold for jumprelu")
        if bool((threshold < 0).any()):
            raise StageError(f"{path}: negative JumpReLU thresholds are not supported")
    elif activation != "relu":
        raise StageError(f"{folder / 'config.yaml'}: activation {activation!r} is not known")
    skip = tensors.get("W_skip")
    return Transcoder(
        W_enc=tensors["W_enc"].T,
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=torch.zeros(d_model, dtype=tensors["b_dec"].dtype),
        b_dec_out=tensors["b_dec"],
        layer=layer,
        input_hook=parse_hook(config["feature_input_hook"], where=f"{where} feature_input_hook")[1],
        output_hook=parse_hook(
            config["feature_output_hook"], output=True, where=f"{where} feature_output_hook"
        )[1],
        activation=activation,
        k=None if k is None else int(k),
        threshold=threshold if activation == "jumprelu" else None,
        W_skip=None if skip is None else skip.T,
        meta={"format": "circuit-tracer", "input_hook_from": "config.yaml feature_input_hook"},
        source=str(path),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fetch a hub transcoder set's layer files.")
    ap.add_argument("command", choices=["fetch"])
    ap.add_argument("repo", help="a hub repo id")
    ap.add_argument("--file", default="layer_{layer}.safetensors", help="each layer's file")
    ap.add_argument("--layers", type=int, nargs="+", required=True)
    args = ap.parse_args(argv)
    try:
        print(resolve_source(args.repo, args.file, args.layers))
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
