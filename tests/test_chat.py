"""chat: a user message under the chat template, tokenised with no special tokens added."""

from __future__ import annotations

import copy

import pytest

from steerpipe.lm.chat import ask_ids, chat_prompt, chat_prompt_ids, encode


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


def test_asking_after_an_unfinished_answer_is_the_templates_conversation(tokenizer) -> None:
    """The instruction baseline: a trace cut before a step, then ``ask_ids``, is the chat
    template's rendering of the conversation (user, the answer so far, the question), and
    the asking tokens round-trip through decode and encode."""
    answer = "Step one: 3 + 4 = 7.\n\n"
    question = "Stop reasoning here and give your final answer now."
    prompt = chat_prompt_ids(tokenizer, "What is 3 + 4?") + encode(tokenizer, answer)
    asked = ask_ids(tokenizer, question)
    conversation = [
        {"role": "user", "content": "What is 3 + 4?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": question},
    ]
    want = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(prompt + asked) == want
    assert encode(tokenizer, tokenizer.decode(asked)) == asked
    # the turn's markers are the template's special tokens, not their spelling in pieces
    end, start = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"])
    assert asked[0] == end and asked.count(start) == 2
    assert tokenizer.decode(asked).endswith("<|im_start|>assistant\n")


def test_a_template_that_rewrites_the_answer_is_refused(tokenizer) -> None:
    """R1-style templates drop what an answer holds before ``</think>``; one that drops the
    whole answer leaves nowhere to cut, and says so."""
    rewriting = copy.copy(tokenizer)
    rewriting.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}<u>{{ m['content'] }}</u>"
        "{% else %}<a></a>{% endif %}{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    )
    with pytest.raises(ValueError, match="does not write an assistant message"):
        ask_ids(rewriting, "Conclude.")
