"""Chat prompts: one user message under the model's chat template, with the generation prompt.

Both experiments prompt the model this way (experiment A its problems, experiment B its
questions when ``traces.chat_template`` is on); the template already holds the special tokens
it needs, so the text is tokenised without adding more.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase as Tokenizer


def chat_prompt(tokenizer: Tokenizer, user_message: str) -> str:
    """The chat template applied to one user message, with the generation prompt."""
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )
    )


def chat_prompt_ids(tokenizer: Tokenizer, user_message: str) -> list[int]:
    return encode(tokenizer, chat_prompt(tokenizer, user_message))


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def ask_ids(tokenizer: Tokenizer, user_message: str) -> list[int]:
    """The tokens the chat template writes after an unfinished assistant message to end it,
    ask ``user_message`` in a new user turn and open the assistant's reply: appended to a
    prompt that ends inside the model's answer (a trace cut before a step), they ask the model
    there. Found by rendering a conversation around a marker and taking what follows it."""
    marker = "\u2063steerpipe\u2063"  # invisible separators: no template writes them
    text = str(
        tokenizer.apply_chat_template(
            [
                {"role": "user", "content": "question"},
                {"role": "assistant", "content": marker},
                {"role": "user", "content": user_message},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
    )
    if text.count(marker) != 1 or user_message not in text.split(marker)[1]:
        raise ValueError("the chat template does not write an assistant message as given")
    return encode(tokenizer, text.split(marker)[1])
