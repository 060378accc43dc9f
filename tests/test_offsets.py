"""offsets: the tokens of a decoded text that end before a character."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.lm.offsets import tokens_before


def test_tokens_before_each_character(tokenizer: Tokenizer) -> None:
    text = "So 12 + 30 = 42. The answer is Yes."
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    for char in range(len(text) + 1):
        k = tokens_before(tokenizer, ids, text, char)
        # the longest run of whole tokens that decodes to no more than text[:char]
        assert len(tokenizer.decode(ids[:k])) <= char
        assert k == len(ids) or len(tokenizer.decode(ids[: k + 1])) > char
        assert text.startswith(tokenizer.decode(ids[:k]))
    assert tokens_before(tokenizer, ids, text, text.index(" Yes")) == len(ids) - 2
    assert tokens_before(tokenizer, ids + [tokenizer.eos_token_id], text, len(text)) == len(ids) + 1
