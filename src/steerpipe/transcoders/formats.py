"""Transcoder files of one layer each: transcoder_circuits, SAELens 5/6, sparsify (and ours).

Each loader takes the input and output hook points from the format's own fields (the rule
and the source it follows, per format; the tests write each fixture as that source does).
Sets of layers (a folder, the hub) are in ``sets``, circuit-tracer's (and Gemma Scope's in
it) in ``circuit_tracer``; docs/experiment-b.md, "Bringing a real transcoder", has the table.

- ours (``transcoder.save_transcoder``): ``.safetensors`` with ``input_hook`` /
  ``output_hook`` in the metadata; the ``transcoder`` stage's are ``mlp.hook_in`` ->
  ``hook_mlp_out``.
- transcoder_circuits ``.pt`` (``sae_training/sparse_autoencoder.py``, ``config.py``):
  ``cfg.hook_point`` / ``cfg.out_hook_point``, read with torch's weights-only unpickler. Its
  checkpoints come from ``HookedTransformer.from_pretrained`` with the default ``fold_ln``, so
  ``ln2.hook_normalized`` there is the input before the norm's gain. ``b_dec`` centres the input.
- SAELens 5 and 6 (``sae_lens/saes/transcoder.py``, ``loading/pretrained_sae_loaders.py``):
  a folder with ``cfg.json`` and ``sae_weights.safetensors``; the hook is
  ``metadata.hook_name`` (6) or ``hook_name``/``hook_point`` (5), the output
  ``hook_name_out`` where given, else ``hook_mlp_out``; an HF module name
  (``hf_hook_name`` / ``hf_hook_name_out``, as in Gemma Scope 2's configs) decides over them.
  ``architecture`` transcoder, skip_transcoder (``W_skip [d_out, d_in]``),
  jumprelu_transcoder (``threshold``), jumprelu_skip_transcoder (both: Gemma Scope 2's
  affine ones); the input is not centred (``apply_b_dec_to_input`` must be false, as SAELens
  6 requires).
- EleutherAI sparsify (``sparsify/sparse_coder.py``): a folder per hook point,
  ``layers.L.mlp`` with ``cfg.json`` (``transcode: true``, ``activation: topk``, ``k``,
  ``skip_connection``) and ``sae.safetensors`` (``encoder.weight [M, d_in]``,
  ``W_dec [M, d_in]``, ``b_dec`` the output bias, ``W_skip``): ``mlp.hook_in`` ->
  ``mlp.hook_out``, TopK of the ReLU.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from steerpipe.config import StageError
from steerpipe.lm.hooks import hook_layer, parse_hf_hook, parse_hook
from steerpipe.storage import read_json, read_tensors, reading
from steerpipe.transcoders.transcoder import WEIGHTS, Transcoder, load_ours, need_tensors

# SAELens 6's transcoder architectures (sae_lens/__init__.py registers them) -> activation;
# SAELens 5 saved transcoders under an SAE architecture, with d_out / hook_name_out.
SAELENS_TRANSCODERS = {
    "transcoder": "relu",
    "skip_transcoder": "relu",
    "jumprelu_transcoder": "jumprelu",
    "jumprelu_skip_transcoder": "jumprelu",  # Gemma Scope 2's affine transcoders
}
SAELENS_5_ACTIVATIONS = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk_relu"}
CIRCUITS_SPARSITY = "_log_feature_sparsity.pt"  # beside a transcoder_circuits checkpoint
_SPARSIFY_POINT = re.compile(r"^(?:model\.)?layers\.(\d+)\.mlp$")


def load_transcoder(
    path: str | Path, layer: int | None = None, *, input_hook: str | None = None
) -> Transcoder:
    """One layer's transcoder in any format but circuit-tracer's (a set: ``iter_layers``).
    ``input_hook`` (``traces.input_hook``) replaces the point the file names; the file then
    gives only the layer."""
    path = Path(path)
    if path.is_dir() and (path / "sae_weights.safetensors").exists():
        tc = _load_saelens(path, input_hook)
    elif path.is_dir() and (path / "sae.safetensors").exists():
        tc = _load_sparsify(path)
    elif path.suffix == ".pt":
        tc = _load_transcoder_circuits(path, input_hook)
    elif path.suffix == ".safetensors" and path.is_file():
        tc = load_ours(path)
    else:
        raise StageError(
            f"{path}: not a transcoder file this knows (ours .safetensors, transcoder_circuits "
            ".pt, a SAELens or sparsify folder; circuit-tracer's files and Gemma Scope's .npz "
            "with circuit-tracer's config.yaml beside them)"
        )
    if layer is not None and tc.layer != layer:
        raise StageError(f"{path} is a transcoder for layer {tc.layer}, not {layer}")
    if input_hook:
        tc.input_hook = parse_hook(input_hook, where="traces.input_hook")[1]
        tc.meta["input_hook_from"] = "traces.input_hook"
    return tc


def input_point(name: str, where: str, override: str | None) -> tuple[int | None, str]:
    """(layer, point) of a file's input hook field ``name``; with ``override``
    (``traces.input_hook``) the field gives only the layer, so a point this does not know
    (SAELens's ``hook_mlp_in``) needs no reading."""
    if override:
        return hook_layer(name), parse_hook(override, where="traces.input_hook")[1]
    return parse_hook(name, where=where)


def torch_load(path: Path) -> Any:
    """``torch.load`` with the weights-only unpickler; what it cannot read ends in one line."""
    with reading(path, "PyTorch checkpoint"):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            lines = str(e).splitlines()
            refused = next((x.strip() for x in lines if "Unsupported global" in x), None)
            if refused:  # code or a class the weights-only unpickler does not run
                raise StageError(
                    f"{path}: cannot read it safely as a checkpoint ({refused})"
                ) from e
            raise ValueError(str(e)) from e  # truncated, or not a checkpoint: reading() says so


def log_frequency_of(path: Path) -> torch.Tensor | None:
    """The log10 firing frequencies shipped with one layer's file, without its weights:
    transcoder_circuits' ``*_log_feature_sparsity.pt`` beside it, SAELens' (and sparsify's
    absent) ``sparsity.safetensors`` in its folder, ours' ``log_frequency`` tensor."""
    if path.suffix == ".pt":
        sparsity = path.with_name(path.stem + CIRCUITS_SPARSITY)
        return torch_load(sparsity) if sparsity.exists() else None
    if path.is_dir():
        sparsity = path / "sparsity.safetensors"
        return read_tensors(sparsity)[0].get("sparsity") if sparsity.exists() else None
    with reading(path, "safetensors file"), safe_open(str(path), framework="pt") as f:
        return f.get_tensor("log_frequency") if "log_frequency" in f.keys() else None  # noqa: SIM118


def need_field(cfg: dict[str, Any], name: str, path: Path) -> Any:
    if cfg.get(name) is None:
        raise StageError(f"{path}: no field {name!r}")
    return cfg[name]


def _load_transcoder_circuits(path: Path, override: str | None = None) -> Transcoder:
    """``{"cfg": LanguageModelSAERunnerConfig, "state_dict": {...}}`` written by torch.save.

    Read with torch's weights-only unpickler: the config class is replaced by a plain record
    type registered under its own name, so no code from the checkpoint ever runs.
    """
    record = type("LanguageModelSAERunnerConfig", (), {"__module__": "sae_training.config"})
    try:
        with torch.serialization.safe_globals([record]):
            ckpt = torch_load(path)
    except StageError:
        raise
    except Exception as e:  # torch names the class it refused
        raise StageError(
            f"{path}: cannot read it safely as a transcoder_circuits file ({e})"
        ) from e
    if not isinstance(ckpt, dict) or "cfg" not in ckpt or "state_dict" not in ckpt:
        raise StageError(f"{path}: not a transcoder_circuits checkpoint (no cfg/state_dict)")
    cfg = dict(ckpt["cfg"] if isinstance(ckpt["cfg"], dict) else vars(ckpt["cfg"]))
    state = ckpt["state_dict"]
    need_tensors(state, WEIGHTS, path)
    if cfg.get("is_transcoder") is False:
        raise StageError(f"{path}: cfg.is_transcoder is false: an SAE, not a transcoder")
    layer, input_hook = input_point(
        need_field(cfg, "hook_point", path), f"{path} cfg.hook_point", override
    )
    if layer is None:
        raise StageError(f"{path}: cfg.hook_point {cfg['hook_point']!r} names no block")
    out = cfg.get("out_hook_point") or f"blocks.{layer}.hook_mlp_out"
    return Transcoder(
        **{k: state[k] for k in WEIGHTS},
        layer=layer,
        input_hook=input_hook,
        output_hook=parse_hook(out, output=True, where=f"{path} cfg.out_hook_point")[1],
        log_frequency=log_frequency_of(path),
        meta={"format": "transcoder_circuits", "input_hook_from": "cfg.hook_point"},
        source=str(path),
    )


def _saelens_hooks(
    cfg: dict[str, Any], cfg_path: Path, override: str | None
) -> tuple[int, str, str, str]:
    """(layer, input point, output point, the field the input point came from) of a SAELens
    config. An HF module name (``hf_hook_name`` / ``hf_hook_name_out``, as SAELens's Gemma
    Scope 2 configs carry) decides the point: those configs say ``blocks.L.hook_mlp_in``,
    which TransformerLens gives to the norm's input, for the norm's output."""
    meta = cfg.get("metadata") or {}

    def field(name: str) -> tuple[str, Any]:  # SAELens 6 keeps these in metadata, 5 at the top
        if meta.get(name) is not None:
            return f"metadata.{name}", meta[name]
        return name, cfg.get(name)

    hook_field, hook = field("hook_name")
    if hook is None and cfg.get("hook_point"):
        hook_field, hook = "hook_point", cfg["hook_point"]
    if hook is None:
        name = "metadata.hook_name" if "metadata" in cfg else "hook_name"
        raise StageError(f"{cfg_path}: no field {name!r}")
    layer = hook_layer(hook)
    hf_field, hf_hook = field("hf_hook_name")
    if override:
        layer, input_hook = input_point(hook, "", override)
        input_from = "traces.input_hook"
    elif hf_hook is not None:
        hf_layer, input_hook = parse_hf_hook(hf_hook, where=f"{cfg_path} {hf_field}")
        if layer is not None and hf_layer != layer:
            raise StageError(f"{cfg_path}: {hook_field} {hook!r} and {hf_field} {hf_hook!r} differ")
        layer, input_from = hf_layer, f"cfg.json {hf_field}"
    elif str(hook).endswith("hook_mlp_in"):
        raise StageError(
            f"{cfg_path}: {hook_field} {hook!r} is ambiguous and no hf_hook_name says which "
            "point it is (TransformerLens's hook_mlp_in is the norm's input, hook_resid_mid; "
            "Gemma Scope 2 uses the name for its output, mlp.hook_in): set traces.input_hook"
        )
    else:
        layer, input_hook = parse_hook(hook, where=f"{cfg_path} {hook_field}")
        input_from = f"cfg.json {hook_field}"
    if layer is None:
        raise StageError(f"{cfg_path}: {hook_field} {hook!r} names no block")
    out_field, out = field("hf_hook_name_out")
    if out is not None:
        out_layer, output_hook = parse_hf_hook(out, output=True, where=f"{cfg_path} {out_field}")
        if out_layer != layer:
            raise StageError(f"{cfg_path}: {out_field} {out!r} is not layer {layer}'s")
    else:
        out_field, out = field("hook_name_out")
        where = f"{cfg_path} {out_field}"
        output_hook = parse_hook(out or "hook_mlp_out", output=True, where=where)[1]
    return layer, input_hook, output_hook, input_from


def _load_saelens(folder: Path, override: str | None = None) -> Transcoder:
    cfg_path = folder / "cfg.json"
    if not cfg_path.exists():
        raise StageError(f"{folder}: a SAELens folder needs cfg.json")
    cfg = read_json(cfg_path)
    tensors, _ = read_tensors(folder / "sae_weights.safetensors")
    need_tensors(tensors, ("W_enc", "b_enc", "W_dec", "b_dec"), folder / "sae_weights.safetensors")
    version = 6 if "metadata" in cfg else 5
    layer, input_hook, output_hook, input_from = _saelens_hooks(cfg, cfg_path, override)
    arch = str(cfg.get("architecture", "standard"))
    activation = SAELENS_TRANSCODERS.get(arch)
    old_style = version == 5 and ("d_out" in cfg or cfg.get("hook_name_out"))
    if activation is None and old_style and arch in SAELENS_5_ACTIVATIONS:
        activation = SAELENS_5_ACTIVATIONS[arch]  # a transcoder saved as an SAE architecture
    if activation is None and "transcoder" in arch:
        known = ", ".join(SAELENS_TRANSCODERS)
        raise StageError(f"{cfg_path}: architecture {arch!r} is not known (only {known})")
    if activation is None:
        raise StageError(f"{cfg_path}: architecture {arch!r} is an SAE, not a transcoder")
    if cfg.get("activation_fn") == "topk":
        activation = "topk_relu"
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", None, False):
        raise StageError(f"{cfg_path}: normalize_activations {norm!r} is not supported")
    d_in = int(need_field(cfg, "d_in", cfg_path))
    if "b_dec_out" in tensors:  # b_dec centres the input, as in transcoder_circuits
        b_dec, b_dec_out = tensors["b_dec"], tensors["b_dec_out"]
    elif cfg.get("apply_b_dec_to_input") is True:
        raise StageError(
            f"{cfg_path}: apply_b_dec_to_input is true, which a transcoder's output bias "
            "cannot be (SAELens 6 refuses it too)"
        )
    else:
        b_dec, b_dec_out = torch.zeros(d_in, dtype=tensors["b_dec"].dtype), tensors["b_dec"]
    k, threshold = None, None
    if activation == "jumprelu":
        threshold = tensors.get("threshold")
        if threshold is None and "log_threshold" in tensors:
            threshold = tensors["log_threshold"].exp()
        if threshold is None:
            raise StageError(f"{folder}: no tensor 'threshold' for architecture {arch!r}")
    elif activation == "topk_relu":
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        if k is None:
            raise StageError(f"{cfg_path}: a TopK transcoder needs a field 'k'")
    skip = tensors.get("W_skip")
    if "skip" in arch and skip is None:
        raise StageError(f"{folder}: no tensor 'W_skip' for architecture {arch!r}")
    return Transcoder(
        W_enc=tensors["W_enc"],
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=b_dec,
        b_dec_out=b_dec_out,
        layer=layer,
        input_hook=input_hook,
        output_hook=output_hook,
        activation=activation,
        k=None if k is None else int(k),
        threshold=threshold,
        W_skip=None if skip is None else skip.T,
        log_frequency=log_frequency_of(folder),
        meta={"format": f"saelens{version}", "input_hook_from": input_from},
        source=str(folder),
    )


def _load_sparsify(folder: Path) -> Transcoder:
    cfg_path = folder / "cfg.json"
    if not cfg_path.exists():
        raise StageError(f"{folder}: a sparsify folder needs cfg.json")
    cfg = read_json(cfg_path)
    match = _SPARSIFY_POINT.match(folder.name)
    if not match:
        raise StageError(f"{folder}: sparsify hook point {folder.name!r} is not layers.L.mlp")
    if not cfg.get("transcode"):
        raise StageError(f"{cfg_path}: transcode is false: an SAE, not a transcoder")
    if cfg.get("activation", "topk") != "topk":
        raise StageError(f"{cfg_path}: activation {cfg['activation']!r} is not supported")
    weights = folder / "sae.safetensors"
    tensors, _ = read_tensors(weights)
    need_tensors(tensors, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), weights)
    d_in = int(need_field(cfg, "d_in", cfg_path))
    if tuple(tensors["encoder.weight"].shape)[1:] != (d_in,):
        raise StageError(f"{weights}: encoder.weight is {tuple(tensors['encoder.weight'].shape)}")
    skip = tensors.get("W_skip")
    return Transcoder(
        W_enc=tensors["encoder.weight"].T,
        b_enc=tensors["encoder.bias"],
        W_dec=tensors["W_dec"],
        b_dec=torch.zeros(d_in, dtype=tensors["b_dec"].dtype),
        b_dec_out=tensors["b_dec"],
        layer=int(match.group(1)),
        input_hook="mlp.hook_in",
        output_hook="mlp.hook_out",
        activation="topk_relu",
        k=int(need_field(cfg, "k", cfg_path)),
        W_skip=None if skip is None else skip.T,
        meta={"format": "sparsify", "input_hook_from": "the hook point layers.L.mlp"},
        source=str(folder),
    )
