"""The offline steps data set: the model reasons on packaged problems, its steps labelled by rule.

``StepsParams`` is params.yaml ``steps``, the steps_dataset stage's section. Problems come from
a packaged ``reasoning-gym`` task (``steerpipe/gym.py``); the model writes its reasoning under
its chat template; the text is split into steps on ``steps.separator`` (``steps.split_steps``)
and labelled by the rule-based labeller in ``labels`` (or by Claude: ``claude/step_labels.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.claude.message_batches import ClaudeParams
from steerpipe.config import check
from steerpipe.lm.chat import chat_prompt_ids
from steerpipe.lm.generation import generate
from steerpipe.steering.labels import label_steps
from steerpipe.steering.sampling import check_sampling
from steerpipe.steering.steps import split_steps

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class StepsParams:
    SECTION: ClassVar[str] = "steps"
    source: str  # generate | a hub data set id | path/to.parquet
    task: str  # a reasoning-gym task (source: generate)
    n_problems: int
    problem_seed: int
    instruction: str  # put before each problem in the user message
    separator: str  # between two steps of a trace
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    batch_size: int
    labeller: Literal["rule", "anthropic"]
    label_mid_step: bool  # rule labeller: also by a later line's or sentence's opening
    claude: ClaudeParams

    def __post_init__(self) -> None:
        check(self.n_problems >= 1, "steps.n_problems", "at least 1")
        check(self.separator != "", "steps.separator", "not empty")
        check_sampling(self, self.SECTION)


def build_rows(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    problems: list[str],
    *,
    instruction: str,
    separator: str,
    label_mid_step: bool,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """Let the model reason on each problem and label its steps: the rows, and how many
    traces ``max_new_tokens`` cut off before the model ended them.

    The ``problem`` column holds the whole user message the model saw (instruction and
    problem) and ``response_ids`` the tokens it wrote, so that ``prepare.step_tokens``
    rebuilds exactly the context of each step. A trace cut off by ``max_new_tokens`` loses
    its last, unfinished step.
    """
    messages = [instruction + p for p in problems]
    prompts = [chat_prompt_ids(tokenizer, m) for m in messages]
    outs = generate(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    eos = set(tokenizer.all_special_ids)
    rows, cut = [], 0
    for message, out in zip(messages, outs, strict=True):
        finished = bool(out) and out[-1] in eos
        cut += not finished
        steps = split_steps(str(tokenizer.decode(out, skip_special_tokens=True)), separator)
        if not finished:
            steps = steps[:-1]
        verification, conclusion = label_steps(steps, mid_step=label_mid_step)
        rows.append(
            {
                "problem": message,
                "steps": steps,
                "verification_steps": verification,
                "conclusion_steps": conclusion,
                "response_ids": list(out),
            }
        )
    return rows, cut
