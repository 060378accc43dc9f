"""circuit-tracer's transcoder sets: ``config.yaml`` and one file per layer, in three layouts.

circuit-tracer (``circuit_tracer/utils/hf_utils.py``, ``load_transcoders``) reads a folder or
hub repo with ``config.yaml``: ``model_kind``, ``feature_input_hook``, ``feature_output_hook``,
optional ``activation`` / ``k`` and ``transcoders`` (each layer's file, local or ``hf://``;
else ``layer_{i}.safetensors``). ``circuit_tracer/transcoder/single_layer_transcoder.py`` has
the per-layer files, which this tells apart by what they hold (circuit-tracer by the repo id):

- its own (``to_safetensors``, ``load_relu_transcoder``): ``W_enc`` / ``W_dec``
  ``[d_transcoder, d_model]``, ``b_dec`` the output bias, optional ``W_skip`` (``x @ W_skip.T``)
  and ``activation_function.threshold`` (JumpReLU);
- Gemma Scope's ``.npz`` (``load_gemma_scope_transcoder``; ``mwhanna/gemma-scope-transcoders``
  for Gemma-2-2B): ``W_enc [d_model, d_transcoder]``, ``W_dec``, ``b_enc``, ``b_dec``,
  ``threshold``; JumpReLU;
- Gemma Scope 2's safetensors (``load_gemma_scope_2_transcoder``): ``w_enc [d_model,
  d_transcoder]``, ``w_dec``, ``b_enc``, ``b_dec``, ``threshold`` and, in the affine ones,
  ``affine_skip_connection [d_in, d_out]`` (``x @ affine``); JumpReLU.

A cross-layer transcoder (``model_kind: cross_layer_transcoder``;
``circuit_tracer/transcoder/cross_layer_transcoder.py``) comes in two layouts: circuit-tracer's
own (``to_safetensors``, ``load_clt``: ``W_enc_{l}.safetensors`` with ``W_enc_{l}
[d_transcoder, d_model]``, ``b_enc_{l}``, ``b_dec_{l}``, optional ``threshold_{l}``, and
``W_dec_{l}.safetensors`` with ``W_dec_{l} [d_transcoder, n - l, d_model]``; no skip) and
Gemma Scope 2's (``load_gemma_scope_2_clt``: the files ``transcoders`` lists, one per layer,
``w_enc [d_model, d_transcoder]``, ``w_dec [d_transcoder, n, d_model]`` of which the columns
from the layer up are used, ``b_enc``, ``b_dec``, ``threshold``, optional
``affine_skip_connection [d_in, d_out]``). circuit-tracer 0.5.0's ``load_gemma_scope_2_clt``
reads layers ``range(max(paths))``, one fewer than it is given, and then fails on the
decoders' shapes; this reads all of them.

circuit-tracer's JumpReLU is ``x * (x > threshold)`` (``activation_functions.py``): the same as
ours, ``relu(x) * (x > threshold)``, for the thresholds of zero or more that this accepts.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from steerpipe.config import StageError
from steerpipe.lm.hooks import parse_hook
from steerpipe.storage import read_tensors, reading
from steerpipe.transcoders.cross_layer import CrossLayerTranscoder
from steerpipe.transcoders.formats import need_field
from steerpipe.transcoders.transcoder import Transcoder, need_tensors

CRV_TOPK = {"facebook/crv-8b-instruct-transcoders": 128}  # circuit-tracer's hard-coded k


def circuit_tracer_config(folder: Path) -> dict[str, Any] | None:
    """The folder's ``config.yaml``, checked; None where there is none."""
    path = folder / "config.yaml"
    if not path.exists():
        return None
    with reading(path, "YAML file"):
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(str(e).replace("\n", " ")) from e
    if not isinstance(config, dict):
        raise StageError(f"{path}: not a circuit-tracer config (a YAML mapping)")
    kind = config.setdefault("model_kind", "transcoder_set")
    if kind not in ("transcoder_set", "cross_layer_transcoder"):
        raise StageError(
            f"{path}: model_kind {kind!r} is not transcoder_set or cross_layer_transcoder"
        )
    for name in ("feature_input_hook", "feature_output_hook"):
        need_field(config, name, path)
    return dict(config)


def layer_file(folder: Path, config: dict[str, Any], file: str, layer: int) -> Path:
    """Where layer ``layer``'s file is: ``transcoders[layer]`` (fetched if ``hf://``), else
    ``file`` in the folder."""
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


def read_npz(path: Path) -> dict[str, torch.Tensor]:
    """The arrays of an ``.npz`` file as tensors; never unpickles."""
    with reading(path, "NumPy .npz file"):
        try:
            arrays = np.load(path, allow_pickle=False)
        except zipfile.BadZipFile as e:
            raise ValueError(f"a damaged archive ({e})") from e
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise ValueError("one array (.npy), not an archive of named arrays")
        with arrays:
            return {k: torch.from_numpy(np.array(arrays[k])) for k in arrays.files}


def _check_shapes(path: Path, t: dict[str, torch.Tensor], enc: str, dec: str, stored: str) -> None:
    """``t[enc]`` and ``t[dec]`` as ``stored`` says, from the lengths of ``b_enc`` and ``b_dec``."""
    d_t, d_model = len(t["b_enc"]), len(t["b_dec"])
    want = {enc: (d_model, d_t) if stored == "d_model, d_transcoder" else (d_t, d_model)}
    want[dec] = (d_t, d_model)
    for name, shape in want.items():
        if tuple(t[name].shape) != shape:
            raise StageError(
                f"{path}: {name} is {tuple(t[name].shape)}; this layout stores it {shape} "
                f"(b_enc {d_t}, b_dec {d_model})"
            )


def _layout(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """(which of the three layouts, its tensors in circuit-tracer's own layout's names:
    ``W_enc``/``W_dec`` ``[d_transcoder, d_model]``, ``threshold``, ``W_skip [d_out, d_in]``)."""
    if path.suffix == ".npz":
        raw = read_npz(path)
        need_tensors(raw, ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"), path)
        _check_shapes(path, raw, "W_enc", "W_dec", "d_model, d_transcoder")
        return "Gemma Scope .npz", {**raw, "W_enc": raw["W_enc"].T}
    raw, _ = read_tensors(path)
    if "w_enc" in raw:
        need_tensors(raw, ("w_enc", "w_dec", "b_enc", "b_dec", "threshold"), path)
        _check_shapes(path, raw, "w_enc", "w_dec", "d_model, d_transcoder")
        t = {"W_enc": raw["w_enc"].T, "W_dec": raw["w_dec"], "threshold": raw["threshold"]}
        t |= {"b_enc": raw["b_enc"], "b_dec": raw["b_dec"]}
        if "affine_skip_connection" in raw:
            t["W_skip"] = raw["affine_skip_connection"].T
        return "Gemma Scope 2", t
    need_tensors(raw, ("W_enc", "b_enc", "W_dec", "b_dec"), path)
    _check_shapes(path, raw, "W_enc", "W_dec", "d_transcoder, d_model")
    if "activation_function.threshold" in raw:
        raw["threshold"] = raw.pop("activation_function.threshold")
    return "circuit-tracer", raw


def _hub_repo_of(folder: Path) -> str:
    """``org/name`` of a folder in the HF cache (``models--org--name/snapshots/<sha>``)."""
    repo = folder.resolve().parent.parent.name
    if not repo.startswith("models--"):
        return ""
    return repo.removeprefix("models--").replace("--", "/", 1)


def load_set_layer(
    folder: Path, config: dict[str, Any], file: str, layer: int, input_hook: str | None = None
) -> Transcoder:
    """Layer ``layer`` of a circuit-tracer set; ``input_hook`` replaces the config's."""
    path = layer_file(folder, config, file, layer)
    where = str(folder / "config.yaml")
    layout, t = _layout(path)
    d_model = len(t["b_dec"])
    threshold = t.get("threshold")
    activation = config.get("activation") or ("jumprelu" if threshold is not None else "relu")
    if layout != "circuit-tracer":
        activation = "jumprelu"  # both Gemma Scope loaders build a JumpReLU
    k = None
    if activation == "topk":
        k = config.get("k") or (int(t["k"]) if "k" in t else None)
        k = k or CRV_TOPK.get(_hub_repo_of(folder))
        if k is None:
            raise StageError(f"{where}: activation topk needs a field 'k'")
    elif activation == "jumprelu":
        if threshold is None:
            raise StageError(f"{path}: no tensor activation_function.threshold for jumprelu")
        if bool((threshold < 0).any()):
            raise StageError(f"{path}: negative JumpReLU thresholds are not supported")
    elif activation != "relu":
        raise StageError(f"{where}: activation {activation!r} is not known")
    skip = t.get("W_skip")
    hook = input_hook or config["feature_input_hook"]
    hook_from = "traces.input_hook" if input_hook else "config.yaml feature_input_hook"
    return Transcoder(
        W_enc=t["W_enc"].T,
        b_enc=t["b_enc"],
        W_dec=t["W_dec"],
        b_dec=torch.zeros(d_model, dtype=t["b_dec"].dtype),
        b_dec_out=t["b_dec"],
        layer=layer,
        input_hook=parse_hook(
            hook, where="traces.input_hook" if input_hook else f"{where} feature_input_hook"
        )[1],
        output_hook=parse_hook(
            config["feature_output_hook"], output=True, where=f"{where} feature_output_hook"
        )[1],
        activation=activation,
        k=None if k is None else int(k),
        threshold=threshold if activation == "jumprelu" else None,
        W_skip=None if skip is None else skip.T,
        meta={
            "format": "circuit-tracer",
            "layout": layout,
            "input_hook_from": hook_from,
        },
        source=str(path),
    )


def load_clt(
    folder: Path, config: dict[str, Any], input_hook: str | None = None
) -> CrossLayerTranscoder:
    """The cross-layer transcoder of a folder whose ``config.yaml`` says
    ``model_kind: cross_layer_transcoder``, in either layout."""
    where = folder / "config.yaml"
    hooks = {
        "input_hook": input_hook or config["feature_input_hook"],
        "output_hook": config["feature_output_hook"],
    }
    hook_from = "traces.input_hook" if input_hook else "config.yaml feature_input_hook"
    meta = {"format": "circuit-tracer cross-layer transcoder", "input_hook_from": hook_from}
    if config.get("transcoders"):  # Gemma Scope 2: one file per layer
        n = len(config["transcoders"])
        layers = []
        for layer in range(n):
            path = layer_file(folder, config, "", layer)
            raw, _ = read_tensors(path)
            need_tensors(raw, ("w_enc", "w_dec", "b_enc", "b_dec", "threshold"), path)
            if raw["w_dec"].dim() != 3 or raw["w_dec"].shape[1] != n:
                shape = tuple(raw["w_dec"].shape)
                raise StageError(
                    f"{path}: w_dec is {shape}; Gemma Scope 2 stores [d_transcoder, {n}, "
                    f"d_model] for {n} layers"
                )
            layers.append(raw)
        skip = [raw["affine_skip_connection"] for raw in layers if "affine_skip_connection" in raw]
        return CrossLayerTranscoder(
            W_enc=torch.stack([raw["w_enc"] for raw in layers]),
            b_enc=torch.stack([raw["b_enc"] for raw in layers]),
            W_dec=[raw["w_dec"][:, layer:] for layer, raw in enumerate(layers)],
            b_dec=torch.stack([raw["b_dec"] for raw in layers]),
            threshold=torch.stack([raw["threshold"] for raw in layers]),
            W_skip=torch.stack(skip) if len(skip) == n else None,
            meta={**meta, "layout": "Gemma Scope 2"},
            source_path=str(where),
            **hooks,
        )
    n = len(list(folder.glob("W_enc_*.safetensors")))
    if n == 0:
        raise StageError(
            f"{where}: model_kind cross_layer_transcoder, but no W_enc_0.safetensors ... beside "
            "it nor a transcoders list"
        )
    enc, dec = [], []
    for layer in range(n):
        path = folder / f"W_enc_{layer}.safetensors"
        if not path.exists():
            raise StageError(f"{path} does not exist ({n} W_enc_*.safetensors files in {folder})")
        raw, _ = read_tensors(path)
        need_tensors(raw, tuple(f"{k}_{layer}" for k in ("W_enc", "b_enc", "b_dec")), path)
        enc.append(raw)
        path = folder / f"W_dec_{layer}.safetensors"
        dec.append(read_tensors(path)[0].get(f"W_dec_{layer}"))
        if dec[-1] is None:
            raise StageError(f"{path}: no tensor W_dec_{layer}")
    thresholds = [raw.get(f"threshold_{layer}") for layer, raw in enumerate(enc)]
    if len({t is None for t in thresholds}) > 1:
        raise StageError(f"{folder}: some W_enc_*.safetensors have a threshold_* and some not")
    return CrossLayerTranscoder(
        W_enc=torch.stack([raw[f"W_enc_{layer}"].T for layer, raw in enumerate(enc)]),
        b_enc=torch.stack([raw[f"b_enc_{layer}"] for layer, raw in enumerate(enc)]),
        W_dec=dec,  # type: ignore[arg-type]
        b_dec=torch.stack([raw[f"b_dec_{layer}"] for layer, raw in enumerate(enc)]),
        threshold=None if thresholds[0] is None else torch.stack(thresholds),  # type: ignore[arg-type]
        meta={**meta, "layout": "circuit-tracer"},
        source_path=str(where),
        **hooks,
    )
