"""Where a character of a decoded text falls among the token ids that decode to it.

Both experiments read generated text with patterns and then need the tokens before a match:
experiment A the tokens a solution spends before it concludes (``steering/solutions.score``),
experiment B the point of a generation where its Yes/No answer is read
(``transcoders/neuron_eval.answer_context``).
"""

from __future__ import annotations

import bisect

from transformers import PreTrainedTokenizerBase as Tokenizer


def tokens_before(tokenizer: Tokenizer, ids: list[int], text: str, char: int) -> int:
    """How many of ``ids`` (which decode to ``text``) end at or before character ``char``."""
    return (
        bisect.bisect_right(
            range(len(ids) + 1),
            char,
            key=lambda t: len(str(tokenizer.decode(ids[:t], skip_special_tokens=True))),
        )
        - 1
    )
