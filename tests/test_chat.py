"""chat: a user message under the chat template, tokenised with no special tokens added."""

from __future__ import annotations

from steerpipe.lm.chat import chat_prompt, chat_prompt_ids, encode


def test_the_prompt_is_the_templates_own_tokens(tokenizer) -> None:
    message = [{"role": "user", "content": "What is 2+2?"}]
    want = tokenizer.apply_chat_template(
        message, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert chat_prompt_ids(tokenizer, "What is 2+2?") == want


def test_the_prompt_ends_with_the_generation_prompt(tokenizer) -> None:
    text = chat_prompt(tokenizer, "Hi")
    assert text.endswith("<|im_start|>assistant\n") and "Hi<|im_end|>" in text
    assert chat_prompt_ids(tokenizer, "Hi") == encode(tokenizer, text)


def test_encode_adds_no_special_tokens(tokenizer) -> None:
    assert encode(tokenizer, "") == []
    ids = encode(tokenizer, "one two")
    assert tokenizer.decode(ids) == "one two"
    assert not set(ids) & set(tokenizer.all_special_ids)
