"""standins: the real chat templates' behaviour, pinned; stand-in models of the real shapes."""

from __future__ import annotations

import hashlib

import pytest
import torch

from steerpipe.lm.activations import capture_resid_pre
from steerpipe.lm.chat import chat_prompt, chat_prompt_ids
from steerpipe.lm.models import load_bridge, load_model
from steerpipe.steering.prepare import original_prompt, step_tokens
from steerpipe.transcoders.sets import load_layers
from steerpipe.transcoders.yesno import prompt_ids
from steerpipe_presets.standins import ARCHITECTURES, chat_template, write_model, write_transcoders

R1 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
# the template files are the tokenizers' chat_template strings; any edit must be deliberate
TEMPLATE_SHA256 = {
    R1: "56a1447ad31926fdc21fb07e56e5642bd9c850c4f52d8c8af7bbe5f079a84f5f",
    LLAMA: "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
}


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory):
    def make(name: str):
        return load_model(str(write_model(name, tmp_path_factory.mktemp("m"))), random_init=True)

    return {name: make(name) for name in ARCHITECTURES}


@pytest.mark.parametrize("name", [R1, LLAMA])
def test_template_text_is_pinned(name: str) -> None:
    assert hashlib.sha256(chat_template(name).encode()).hexdigest() == TEMPLATE_SHA256[name]


def test_r1_distill_template(standin) -> None:
    _, tok = standin[R1]
    prompt = chat_prompt(tok, "What is 2+2?")
    # the generation prompt opens the thinking block: reconstructed steps follow <think>\n
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
    rebuilt = original_prompt(tok, "What is 2+2?", ["First, 2+2.", "So 4.", "Done."], 2)
    assert rebuilt == prompt + "First, 2+2.\n\nSo 4.\n\n"
    ids = chat_prompt_ids(tok, "What is 2+2?")
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # no second BOS
    # why steps are appended as text: the template drops an assistant turn's thinking
    turn = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a</think>b"}]
    rendered = tok.apply_chat_template(turn, tokenize=False)
    assert rendered == "<｜begin▁of▁sentence｜><｜User｜>Q<｜Assistant｜>b<｜end▁of▁sentence｜>"


@pytest.mark.parametrize("name", [R1, LLAMA])
def test_step_prompts_round_trip_under_the_real_templates(standin, name: str) -> None:
    """prompt + step is a prefix of the chat prompt followed by the trace's tokens, for every
    step; step 0 follows the generation prompt with nothing between."""
    _, tok = standin[name]
    steps = ["First, 2 + 2 = 4.", "\nThen 4 * 3 = 12.", "So the answer is 12.\n"]
    row = {"problem": "What is (2+2)*3?", "steps": steps}
    head = chat_prompt_ids(tok, row["problem"])
    trace = head + tok.encode("\n\n".join(steps), add_special_tokens=False)
    for k, text in enumerate(steps):
        prompt, step = step_tokens(tok, row, k, separator="\n\n", reconstruction="trace")
        assert prompt + step == trace[: len(prompt) + len(step)]
        assert tok.decode(step) == text and (k > 0 or prompt == head)
    original, _ = step_tokens(tok, row, 0, separator="\n\n", reconstruction="original")
    assert tok.decode(original) == tok.decode(head) + "\n\n"  # a boundary the model never wrote


def test_llama31_template(standin) -> None:
    _, tok = standin[LLAMA]
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"
    want = (
        "<|begin_of_text|>"
        + header.format("system")
        + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        + header.format("user")
        + "Is it?<|eot_id|>"
        + header.format("assistant")
    )
    assert chat_prompt(tok, "  Is it?\n") == want  # the template trims the message
    assert chat_prompt_ids(tok, "Is it?").count(tok.bos_token_id) == 1
    # the raw-text prompts of experiment B get one BOS, as TransformerLens's to_tokens gave
    raw = prompt_ids(tok, "Question: is it\nAnswer:", chat_template=False)
    assert raw[0] == tok.bos_token_id and raw.count(tok.bos_token_id) == 1


def test_standin_models_have_the_real_layout(standin) -> None:
    qwen, _ = standin[R1]
    llama, tok = standin[LLAMA]
    assert type(qwen).__name__ == "Qwen2ForCausalLM" and type(llama).__name__ == "LlamaForCausalLM"
    for model, name in ((qwen, R1), (llama, LLAMA)):
        real = ARCHITECTURES[name].config
        for key in (
            "vocab_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
        ):
            assert getattr(model.config, key) == real[key], (name, key)
    assert llama.config.rope_parameters["rope_type"] == "llama3"
    stop = llama.generation_config.eos_token_id
    assert tok.convert_tokens_to_ids("<|eot_id|>") in stop and len(stop) == 3


def test_real_configs_have_the_real_size() -> None:
    from transformers import AutoModelForCausalLM

    from steerpipe_presets.standins import real_config

    with torch.device("meta"):  # no memory: only the parameter count
        model = AutoModelForCausalLM.from_config(real_config(R1))
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    non_embedding = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    assert round(non_embedding / 1e9, 2) == 1.31  # the 1.31B non-embedding parameters
    assert real_config(LLAMA).hidden_size == 4096


def test_standin_hooks_agree_with_the_bridge(standin) -> None:
    model, tok = standin[R1]
    bridge = load_bridge(model, tok, R1)
    seq = chat_prompt_ids(tok, "What is 2+2?") + tok.encode("First", add_special_tokens=False)
    got = capture_resid_pre(model, [seq], [3], layers=[0, 11, 27], n_positions=2, progress=False)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.tensor([seq]))
    for li, layer in enumerate([0, 11, 27]):
        want = cache[f"blocks.{layer}.hook_resid_pre"][0, 3:5]
        torch.testing.assert_close(got[0, li], want, atol=1e-5, rtol=1e-4)


def test_standin_transcoders_load_for_the_model(standin, tmp_path) -> None:
    model, _ = standin[LLAMA]
    file = "layer_{layer:02d}/Llama-3.1-8B-Instruct_blocks.{layer}.ln2.hook_normalized_65536.pt"
    write_transcoders(tmp_path, file, [0, 27], d_model=model.config.hidden_size)
    assert (
        tmp_path / "layer_27/Llama-3.1-8B-Instruct_blocks.27.ln2.hook_normalized_65536.pt"
    ).exists()
    loaded = load_layers(tmp_path, file, [0, 27])
    for layer, tc in loaded.items():
        assert tc.layer == layer and tc.log_frequency is not None
        tc.check_model(model)
