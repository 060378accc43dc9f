"""Where a transcoder set lives: a folder of per-layer files, circuit-tracer's set, the hub.

    python -m steerpipe.transcoders.sets fetch facebook/crv-8b-instruct-transcoders \
        --file 'layer_{layer}.safetensors' --layers 0 9 18 27     # prints the local folder

- A folder: ``file.format(layer=L)`` in it, in any format of ``formats``.
- circuit-tracer: a folder with ``config.yaml`` and one file per layer, in its own layout or
  Gemma Scope's (``.npz``) or Gemma Scope 2's, or a cross-layer transcoder, whose layers are
  its source layers (``circuit_tracer``, ``cross_layer``).
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

import torch
from torch import nn

from steerpipe.config import StageError
from steerpipe.transcoders.circuit_tracer import circuit_tracer_config, load_clt, load_set_layer
from steerpipe.transcoders.formats import CIRCUITS_SPARSITY, load_transcoder, log_frequency_of
from steerpipe.transcoders.transcoder import Transcoder, place

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


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
    config = circuit_tracer_config(folder)
    if config is not None and config["model_kind"] == "cross_layer_transcoder":
        clt = load_clt(folder, config, input_hook)  # whole: a feature writes to every later layer
        for layer in layers:
            if not 0 <= layer < clt.n_layers:
                raise StageError(
                    f"{folder}: layer {layer}: the cross-layer transcoder has {clt.n_layers} layers"
                )
            yield clt.source(layer)
        return
    for layer in layers:
        if config is not None:
            yield load_set_layer(folder, config, file, layer, input_hook)
            continue
        path = folder / file.format(layer=layer)
        if not path.exists():
            raise StageError(f"no transcoder for layer {layer}: {path} does not exist")
        yield load_transcoder(path, layer, input_hook=input_hook)


def load_layers(
    source: str | Path, file: str, layers: list[int], *, input_hook: str | None = None
) -> dict[int, Transcoder]:
    return {tc.layer: tc for tc in iter_layers(source, file, layers, input_hook=input_hook)}


def read_log_frequency(source: str | Path, file: str, layer: int) -> torch.Tensor | None:
    """The log10 firing frequencies a transcoder file ships, without reading its weights
    (None where the format has none: circuit-tracer, sparsify)."""
    folder = Path(source)
    if circuit_tracer_config(folder) is not None:
        return None
    return log_frequency_of(folder / file.format(layer=layer))


def placed_layers(
    source: str, file: str, layers: list[int], model: nn.Module, *, input_hook: str | None = None
) -> Iterator[Transcoder]:
    """``iter_layers`` of ``source`` (a folder or a hub id, ``resolve_source``), each checked
    against ``model`` and placed on its layer's device before the next one is read."""
    folder = resolve_source(source, file, layers)
    placed_clt = None  # a cross-layer transcoder is placed once, for all its layers
    for tc in iter_layers(folder, file, layers, input_hook=input_hook):
        if tc.cross_layer is not None:
            placed_clt = placed_clt or tc.cross_layer.place(model)
            tc = placed_clt.source(tc.layer)
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
    # a cross-layer transcoder in circuit-tracer's layout is read whole: every layer's files
    patterns = ["config.yaml", "W_enc_*.safetensors", "W_dec_*.safetensors"]
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
    config = circuit_tracer_config(folder)
    if config is not None and "transcoders" in config:
        return True  # its layer files are named in the config and fetched when read
    if config is not None and config["model_kind"] == "cross_layer_transcoder":
        n = len(list(folder.glob("W_enc_*.safetensors")))
        names = [f"W_{part}_{i}.safetensors" for part in ("enc", "dec") for i in range(n)]
        return n > max(layers) and all((folder / name).exists() for name in names)
    return all((folder / file.format(layer=layer)).exists() for layer in layers)


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
