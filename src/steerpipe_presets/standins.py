"""Stand-ins: tiny local copies of the presets' real models and data sets, for dry runs.

Nothing can be downloaded here, so a preset's dry run (``python -m steerpipe_presets NAME
--dry-run``) and the tests run on what this module writes:

- a model folder: the real model's config (architecture, layer count, vocabulary, attention
  heads and KV heads, RoPE) with tiny widths, loaded with ``model.random_init``, and a
  tokenizer built here with the real special tokens, the real BOS handling and the real chat
  template (``templates/``), so that chat templating, prompt reconstruction, hook names,
  shapes and dtypes go through the same code as on the real model;
- data sets in the real schemas: immindich/reasoning-steps-labeled and BoolQ;
- transcoders in transcoder_circuits' checkpoint layout, at the preset's file names, or a
  circuit-tracer set (``config.yaml`` + ``layer_{i}.safetensors``) inside a local Hugging Face
  cache, so that a hub id resolves offline as it would after a download.

The tokenizer's own vocabulary is a small byte-level BPE, so token ids differ from the real
ones; nothing in the pipeline depends on the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PretrainedConfig, PreTrainedTokenizerFast, Qwen2Config


@dataclass(frozen=True)
class Architecture:
    """The parts of a real model that a stand-in keeps."""

    config_class: Callable[..., PretrainedConfig]
    config: dict[str, Any]  # the real config's values, less the widths
    widths: dict[str, int]  # the real widths (hidden_size, intermediate_size)
    head_dim: int  # the stand-in's (tiny) head width
    template: str  # file in steerpipe_presets/templates
    bos: str
    eos: str  # the tokenizer's eos token
    pad: str | None
    stop: list[str]  # generation stops at these (the real generation_config's eos ids)
    special: list[str] = field(default_factory=list)  # further special tokens
    added: list[str] = field(default_factory=list)  # added tokens that are not special

    @property
    def standin_hidden_size(self) -> int:
        """The stand-in's d_model: the real head count at the tiny head width."""
        return int(self.config["num_attention_heads"]) * self.head_dim


ARCHITECTURES = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": Architecture(
        config_class=Qwen2Config,
        config={
            "vocab_size": 151936,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "max_position_embeddings": 131072,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
        },
        widths={"hidden_size": 1536, "intermediate_size": 8960},
        head_dim=8,
        template="r1_distill_qwen.jinja",
        bos="<｜begin▁of▁sentence｜>",
        eos="<｜end▁of▁sentence｜>",
        pad="<｜end▁of▁sentence｜>",
        stop=["<｜end▁of▁sentence｜>"],
        special=["<｜User｜>", "<｜Assistant｜>"],
        added=["<think>", "</think>"],
    ),
    "meta-llama/Llama-3.1-8B-Instruct": Architecture(
        config_class=LlamaConfig,
        config={
            "vocab_size": 128256,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 131072,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
        widths={"hidden_size": 4096, "intermediate_size": 14336},
        head_dim=4,
        template="llama31_instruct.jinja",
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        stop=["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
        special=["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>"],
    ),
}

_CORPUS = [
    "Let me double-check the sum. Therefore, the answer is 42. Wait, let me verify that.",
    "Question: is the sun a star\nPassage: The Sun is the star at the center of the system.",
    "Answer: Yes. No. True. False. We need to add the apples: 3 + 4 = 7, so there are 7.",
    "All engineers are whales. Does it logically follow that all engineers are teachers?",
]


def real_config(name: str) -> PretrainedConfig:
    """The real model's config, full widths included: random models of the real size (the
    GPU benchmark) without the hub."""
    arch = ARCHITECTURES[name]
    config = arch.config_class(**arch.config, **arch.widths)
    config.architectures = [type(config).__name__.replace("Config", "ForCausalLM")]
    return config


def chat_template(name: str) -> str:
    """The real chat template of an architecture in ``ARCHITECTURES``."""
    folder = files("steerpipe_presets").joinpath("templates")
    return folder.joinpath(ARCHITECTURES[name].template).read_text()


def build_tokenizer(name: str, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE with the real special tokens, BOS handling and chat template."""
    arch = ARCHITECTURES[name]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    special = list(dict.fromkeys([arch.bos, arch.eos, *arch.special, *arch.stop]))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in arch.added])
    bos_id = tok.token_to_id(arch.bos)
    # both real tokenizers put BOS in front of plain text (Llama-3's post-processor;
    # R1-Distill's add_bos_token)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{arch.bos} $A",
        pair=f"{arch.bos} $A {arch.bos} $B",
        special_tokens=[(arch.bos, bos_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=arch.bos, eos_token=arch.eos, pad_token=arch.pad
    )
    fast.chat_template = chat_template(name)
    return fast


def write_model(name: str, folder: str | Path) -> Path:
    """A folder with the stand-in's config and tokenizer: ``model.name`` with ``random_init``."""
    arch = ARCHITECTURES[name]
    folder = Path(folder)
    tok = build_tokenizer(name)
    hidden = arch.standin_hidden_size
    vocab = tok.get_vocab()
    stop = [vocab[t] for t in arch.stop]
    config = arch.config_class(
        **arch.config,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        bos_token_id=tok.bos_token_id,
        eos_token_id=stop if len(stop) > 1 else stop[0],
    )
    config.architectures = [type(config).__name__.replace("Config", "ForCausalLM")]
    config.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def steps_rows(n: int = 12) -> list[dict[str, Any]]:
    """Rows in the schema of immindich/reasoning-steps-labeled, each with both kinds."""
    rows = []
    for i in range(n):
        steps = [
            f"We need to add {i} and {i + 3} to find the total number of apples in the basket.",
            f"Adding them gives {i} + {i + 3} = {2 * i + 3}, which is the number of apples.",
            f"Wait, let me double-check that sum once more: {i} plus {i + 3} is {2 * i + 3}.",
            f"Therefore, the answer is {2 * i + 3} apples in the basket at the end of the day.",
        ]
        rows.append(
            {
                "problem": f"A basket has {i} apples and gets {i + 3} more. How many now?",
                "steps": steps,
                "verification_steps": [2],
                "conclusion_steps": [3],
            }
        )
    return rows


def math_rows(n: int = 8) -> list[dict[str, Any]]:
    """Rows in MATH-500's schema (problem, answer; LaTeX answers): the first two are problems
    of ``steps_rows``, which the solve stage must leave out."""
    rows = [
        {"problem": row["problem"], "answer": str(2 * i + 3)} for i, row in enumerate(steps_rows(2))
    ]
    for i in range(n - 2):
        rows.append({"problem": f"What is $\\frac{{{i + 1}}}{{2}}$ doubled?", "answer": str(i + 1)})
    return rows


def boolq_rows(n: int = 24) -> list[dict[str, Any]]:
    """Rows in BoolQ's schema (question, passage, answer), half of them true."""
    rows = []
    for i in range(n):
        a, b = 10 + i, 10 + (7 * i) % 23
        rows.append(
            {
                "question": f"is {a} larger than {b}",
                "passage": f"The number {a} is compared with {b}; {max(a, b)} is the larger.",
                "answer": a > b,
            }
        )
    return rows


def write_transcoders(
    folder: str | Path, file: str, layers: list[int], d_model: int, d_sae: int = 64, seed: int = 0
) -> None:
    """Random transcoders in transcoder_circuits' layout (``{"cfg", "state_dict"}`` and a
    ``*_log_feature_sparsity.pt`` beside each), at ``folder / file.format(layer=L)``. The cfg
    is a plain dict here; the real checkpoints pickle a config object, which the loader reads
    the same way (tests/test_transcoders.py)."""
    g = torch.Generator().manual_seed(seed)
    for layer in layers:
        path = Path(folder) / file.format(layer=layer)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "W_enc": torch.randn(d_model, d_sae, generator=g) / d_model**0.5,
            "b_enc": torch.zeros(d_sae),
            "W_dec": torch.randn(d_sae, d_model, generator=g) / d_sae**0.5,
            "b_dec": torch.zeros(d_model),
            "b_dec_out": torch.zeros(d_model),
        }
        cfg = {"hook_point": f"blocks.{layer}.ln2.hook_normalized", "d_in": d_model}
        torch.save(
            {"cfg": {**cfg, "d_sae": d_sae, "is_transcoder": True}, "state_dict": state}, path
        )
        torch.save(
            torch.full((d_sae,), -2.0), path.with_name(path.stem + "_log_feature_sparsity.pt")
        )


def write_circuit_tracer_set(
    folder: str | Path, layers: list[int], d_model: int, d_sae: int = 256, seed: int = 0
) -> None:
    """Random TopK transcoders in circuit-tracer's layout, configured as
    facebook/crv-8b-instruct-transcoders is (``mlp.hook_in`` -> ``mlp.hook_out``, TopK, no k)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_name": "meta-llama/Llama-3.1-8B-Instruct",
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
        "activation": "topk",
    }
    (folder / "config.yaml").write_text("".join(f'{k}: "{v}"\n' for k, v in config.items()))
    g = torch.Generator().manual_seed(seed)
    for layer in layers:
        tensors = {
            "W_enc": torch.randn(d_sae, d_model, generator=g) / d_model**0.5,
            "W_dec": torch.randn(d_sae, d_model, generator=g) / d_sae**0.5,
            "b_enc": torch.zeros(d_sae),
            "b_dec": torch.zeros(d_model),
        }
        save_file(tensors, str(folder / f"layer_{layer}.safetensors"))


def hub_snapshot(cache: str | Path, repo_id: str, revision: str = "0" * 40) -> Path:
    """The snapshot folder of ``repo_id`` in a Hugging Face cache at ``cache``, made as
    huggingface_hub lays it out (``refs/main`` names the revision), for files to be put in."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot
