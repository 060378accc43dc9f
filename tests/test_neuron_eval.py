"""neuron_eval: per-row feature steering in shared batches; the conditions and their rows."""

from __future__ import annotations

import contextlib

import pytest
import torch
from test_cross_layer import _raw
from test_traces import PROMPTS, TC, TC2

from steerpipe.lm.generation import generate
from steerpipe.transcoders.cross_layer import CrossLayerTranscoder
from steerpipe.transcoders.neuron_eval import (
    FeatureSteer,
    answer_context,
    answer_margins,
    condition_kl,
    condition_rows,
    conditions,
    first_step_margins,
    generate_steered,
)
from steerpipe.transcoders.transcoder import steer_features


def test_rows_steer_their_own_features(tiny_model) -> None:
    feats = torch.arange(0, 128, 3)
    transcoders = {1: TC, 2: TC2}
    steers = [
        None,
        FeatureSteer(1, feats, 1.0),
        FeatureSteer(1, feats, 4.0),
        FeatureSteer(2, torch.arange(64), 0.0),
    ]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    kwargs = {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "progress": False}
    mixed = generate_steered(tiny_model, prompts, steers, transcoders, batch_size=4, **kwargs)
    base = generate(tiny_model, prompts, **kwargs)
    assert mixed[0] == base[0] and mixed[1] == base[0]  # strength 1.0 is the model itself
    for i in (2, 3):
        s = steers[i]
        with steer_features(tiny_model, transcoders[s.layer], s.features, s.strength):
            alone = generate(tiny_model, [prompts[i]], **kwargs)[0]
        assert mixed[i] == alone
    assert mixed[2:] != base[2:]


@pytest.mark.parametrize("mode", ["delta", "replace"])
def test_rows_steer_a_cross_layer_transcoders_features(tiny_model, mode: str) -> None:
    """Rows of one batch steer features of two source layers of one cross-layer transcoder,
    or nothing, each as it would alone (replace writes a row's layers from its own up)."""
    raw = _raw(seed=1, skip=True)
    clt = CrossLayerTranscoder(
        W_enc=raw["W_enc"].transpose(1, 2).contiguous(),
        b_enc=raw["b_enc"],
        W_dec=[raw[f"W_dec.{i}"] for i in range(4)],
        b_dec=raw["b_dec"],
        input_hook="mlp.hook_in",
        threshold=raw["threshold"],
        W_skip=raw["W_skip"],
    )
    transcoders = {1: clt.source(1), 2: clt.source(2)}
    feats = torch.arange(0, 32, 2)
    steers = [FeatureSteer(2, feats, 1.0), FeatureSteer(2, feats, 5.0)]
    steers += [None, FeatureSteer(1, feats, 0.0)]
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[1]]
    kwargs = {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "progress": False}
    mixed = generate_steered(
        tiny_model, prompts, steers, transcoders, mode=mode, batch_size=4, **kwargs
    )
    base = generate(tiny_model, prompts, **kwargs)
    for i, s in enumerate(steers):
        if s is None:
            assert mixed[i] == base[i]
            continue
        with steer_features(tiny_model, transcoders[s.layer], s.features, s.strength, mode=mode):
            alone = generate(tiny_model, [prompts[i]], **kwargs)[0]
        assert mixed[i] == alone, i
    if mode == "delta":
        assert mixed[0] == base[0]  # strength 1.0 is the model itself
    assert mixed[1] != base[1]


def test_replace_leaves_the_other_rows_of_a_batch_alone(tiny_model) -> None:
    """replace writes the reconstruction in the rows that steer that layer only: a base row
    and a row steering another layer keep the MLP's own output there."""
    feats = torch.arange(0, 128, 3)
    transcoders = {1: TC, 2: TC2}
    steers = [None, FeatureSteer(1, feats, 4.0), FeatureSteer(2, torch.arange(64), 0.0)]
    steers.append(FeatureSteer(1, feats, 1.0))
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[1]]
    kwargs = {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "progress": False}
    mixed = generate_steered(
        tiny_model, prompts, steers, transcoders, mode="replace", batch_size=4, **kwargs
    )
    assert mixed[0] == generate(tiny_model, [prompts[0]], **kwargs)[0]
    for i in (1, 2, 3):
        s = steers[i]
        hook = steer_features(
            tiny_model, transcoders[s.layer], s.features, s.strength, mode="replace"
        )
        with hook:
            alone = generate(tiny_model, [prompts[i]], **kwargs)[0]
        assert mixed[i] == alone, i


def by_hand_margin(model, prompt: list[int], steer, transcoders, right_yes: bool) -> float:
    """One unpadded forward, the steering hook entered by hand, a log-softmax of the last
    position's logits: log p(right) - log p(wrong) of tokens 30 (Yes) and 31 (No)."""
    hook = (
        steer_features(model, transcoders[steer.layer], steer.features, steer.strength)
        if steer is not None
        else contextlib.nullcontext()
    )
    with torch.no_grad(), hook:
        logits = model(torch.tensor([prompt])).logits[0, -1].double()
    logp = torch.log_softmax(logits, dim=-1)
    margin = float(logp[30] - logp[31])
    return margin if right_yes else -margin


def test_margins_at_the_first_step_equal_the_teacher_forced_ones(tiny_model) -> None:
    # neuron_eval reads the margin at the prompt from the generation's first step; rows that
    # end early (an EOS that some rows write) leave the batch, and the rest keep theirs
    feats = torch.arange(0, 128, 3)
    transcoders = {1: TC, 2: TC2}
    steers = [None, FeatureSteer(1, feats, 4.0), FeatureSteer(2, torch.arange(64), 0.0)] * 3
    prompts = [p for p in PROMPTS for _ in range(3)]
    answers = [True, False, True] * 3
    kwargs = {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "progress": False}
    plain = generate_steered(tiny_model, prompts, steers, transcoders, eos_ids=[], **kwargs)
    eos = plain[4][0]
    first: dict[int, torch.Tensor] = {}
    outs = generate_steered(
        tiny_model, prompts, steers, transcoders, first_logits=first, watch=(30, 31),
        eos_ids=[eos], batch_size=16, **kwargs,
    )  # fmt: skip
    assert outs == [row[: row.index(eos) + 1] if eos in row else row for row in plain]
    assert sorted(first) == list(range(len(prompts)))
    got = first_step_margins(first, answers)
    want = answer_margins(tiny_model, prompts, steers, transcoders, answers, yes_id=30, no_id=31)
    assert got == pytest.approx(want, abs=1e-5)
    by_hand = [
        by_hand_margin(tiny_model, p, s, transcoders, a)
        for p, s, a in zip(prompts, steers, answers, strict=True)
    ]
    assert got == pytest.approx(by_hand, abs=1e-4)
    assert len({round(m, 3) for m in got}) > 3  # the rows' margins differ


def test_answer_margins_equal_a_by_hand_log_softmax_row_by_row(tiny_model) -> None:
    transcoders = {1: TC, 2: TC2}
    steers = [
        None,
        FeatureSteer(1, torch.arange(0, 128, 3), 4.0),
        FeatureSteer(2, torch.arange(64), 0.0),
        None,
    ]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    answers = [True, True, False, False]
    got = answer_margins(
        tiny_model,
        prompts,
        steers,
        transcoders,
        answers,
        yes_id=30,
        no_id=31,
        batch_size=3,
        pad_id=2,
    )
    want = [
        by_hand_margin(tiny_model, p, s, transcoders, a)
        for p, s, a in zip(prompts, steers, answers, strict=True)
    ]
    assert got == pytest.approx(want, abs=1e-4)
    assert got[1] != pytest.approx(got[0], abs=1e-3)  # the features move the margin
    # the right answer's sign: the same row with the other answer is the negated margin
    flipped = answer_margins(
        tiny_model, prompts[:1], steers[:1], transcoders, [False], yes_id=30, no_id=31
    )
    alone = answer_margins(
        tiny_model, prompts[:1], steers[:1], transcoders, [True], yes_id=30, no_id=31
    )
    # alone, not padded beside the longer rows: the negation to the bit
    assert flipped[0] == -alone[0] and alone[0] == pytest.approx(got[0], abs=1e-6)


def test_margins_after_a_context_equal_a_forward_of_prompt_and_context(tiny_model) -> None:
    # margin_at answer: the margin is read after each row's own reasoning, under its hook
    transcoders = {1: TC, 2: TC2}
    steers = [None, FeatureSteer(1, torch.arange(0, 128, 3), 4.0), None]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[2]]
    contexts = [[40, 41, 42, 43, 44], [40, 41], []]
    answers = [True, False, True]
    got = answer_margins(
        tiny_model, prompts, steers, transcoders, answers, yes_id=30, no_id=31,
        contexts=contexts, batch_size=2, pad_id=2,
    )  # fmt: skip
    want = [
        by_hand_margin(tiny_model, p + c, s, transcoders, a)
        for p, c, s, a in zip(prompts, contexts, steers, answers, strict=True)
    ]
    assert got == pytest.approx(want, abs=1e-4)
    plain = answer_margins(
        tiny_model, prompts[2:], steers[2:], transcoders, answers[2:], yes_id=30, no_id=31
    )
    assert got[2] == pytest.approx(plain[0], abs=1e-4)  # an empty context: after the prompt
    with pytest.raises(ValueError, match="2 contexts for 3 prompts"):
        answer_margins(
            tiny_model, prompts, steers, transcoders, answers, yes_id=30, no_id=31,
            contexts=contexts[:2],
        )  # fmt: skip


def test_answer_context_stops_before_the_parsed_answer(tokenizer) -> None:
    cue = tokenizer.encode("\nThe answer is", add_special_tokens=False)
    reasoning = " All A are B and all B are C, so all A are C."

    def ids(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    stated = ids(reasoning + " The answer is Yes.") + [tokenizer.eos_token_id]
    context = answer_context(tokenizer, stated, cue)
    assert tokenizer.decode(context) == reasoning + " The answer is"
    assert context == stated[: len(context)]
    # the answer is the token right after the context: " Yes", as answer_token_ids reads it
    assert tokenizer.decode(stated[len(context)]) == " Yes"
    at_once = ids(" No, it does not follow.")
    assert answer_context(tokenizer, at_once, cue) == []  # basic's case: right after the prompt
    unanswered = ids(reasoning) + [tokenizer.eos_token_id]
    assert answer_context(tokenizer, unanswered, cue) == ids(reasoning) + cue


def masks_of_a_layer() -> dict[str, torch.Tensor]:
    """Features 0-2 reasoning (mean activations 1, 1, 1), 3-9 memory (0.1 .. 0.7), 10 dead."""
    reasoning = torch.zeros(11, dtype=torch.bool)
    reasoning[:3] = True
    memory = torch.zeros(11, dtype=torch.bool)
    memory[3:10] = True
    means = torch.tensor([1.0, 1.0, 1.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.0])
    return {"reasoning": reasoning, "memory": memory, "mean.all": means}


def test_conditions_are_base_then_each_set_and_strength() -> None:
    conds, matches = conditions({4: masks_of_a_layer()}, [0.5, 2.0], seed=3, tolerance=0.05)
    assert [c["condition"] for c in conds] == [
        "base",
        "reasoning@4x0.5",
        "reasoning@4x2",
        "memory@4x0.5",
        "memory@4x2",
        "matched@4x0.5",
        "matched@4x2",
    ]
    assert conds[0] == {"condition": "base", "layer": None, "neurons": None, "strength": None}
    assert conds[1]["features"].tolist() == [0, 1, 2]
    # the control: as many memory features as reasoning ones, the seeded draw, sorted
    draw = torch.randperm(7, generator=torch.Generator().manual_seed(3 + 4))[:3]
    assert conds[3]["features"].tolist() == sorted((3 + draw).tolist())
    assert conds[3]["features"] is conds[4]["features"]  # one draw for every strength
    matched = conds[5]["features"]
    assert len(matched) == 3 and set(matched.tolist()) <= set(range(3, 10))
    # the memory features' means reach at most 0.5 + 0.6 + 0.7 = 1.8 of the target 3.0
    assert matches["layer_4"]["matched_total_mean"] == pytest.approx(1.8)
    assert matches["layer_4"]["within_tolerance"] is False


def test_condition_rows_are_every_question_under_every_condition() -> None:
    conds, _ = conditions({4: masks_of_a_layer()}, [2.0], seed=0, tolerance=0.05)
    questions = [{"id": 7, "answer": True}, {"id": 9, "answer": False}]
    records, prompts, steers = condition_rows(conds[:2], questions, [[1, 5], [1, 6, 7]])
    assert prompts == [[1, 5], [1, 6, 7]] * 2
    assert steers[:2] == [None, None]
    assert steers[2] is steers[3] and steers[2].layer == 4 and steers[2].strength == 2.0
    assert [(r["id"], r["condition"], r["n_features"], r["answer"]) for r in records] == [
        (7, "base", 0, True),
        (9, "base", 0, False),
        (7, "reasoning@4x2", 3, True),
        (9, "reasoning@4x2", 3, False),
    ]


def test_a_delta_strength_of_1_is_unhooked_and_replace_keeps_it() -> None:
    conds, _ = conditions({4: masks_of_a_layer()}, [1.0, 2.0], seed=0, tolerance=0.05)
    questions = [{"id": 7, "answer": True}]
    records, _, steers = condition_rows(conds, questions, [[1, 5]], mode="delta")
    names = [r["condition"] for r in records]
    assert names[:3] == ["base", "reasoning@4x1", "reasoning@4x2"]
    assert [s is None for s in steers] == [n == "base" or n.endswith("x1") for n in names]
    assert records[1]["n_features"] == 3  # the record still says what the condition scales
    _, _, kept = condition_rows(conds, questions, [[1, 5]], mode="replace")
    assert kept[0] is None and all(s is not None for s in kept[1:])
    assert kept[1].strength == 1.0


def test_greedy_twins_are_computed_once(tiny_model, monkeypatch) -> None:
    """Rows with the same prompt and steer (None, or one object) are generated once when
    greedy, with the same tokens and first-step logits as when every row is computed."""
    import steerpipe.transcoders.neuron_eval as neuron_eval

    feats = torch.arange(0, 128, 3)
    transcoders = {1: TC, 2: TC2}
    up = FeatureSteer(1, feats, 4.0)
    steers = [None, up, None, None, up, FeatureSteer(1, feats, 4.0)]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[0], PROMPTS[0]]
    seen: list[int] = []
    real = neuron_eval.generate

    def spy(model, rows, **kwargs):
        seen.append(len(rows))
        return real(model, rows, **kwargs)

    monkeypatch.setattr(neuron_eval, "generate", spy)
    kwargs = {"max_new_tokens": 5, "top_p": 1.0, "progress": False, "batch_size": 8}
    first: dict[int, torch.Tensor] = {}
    outs = generate_steered(
        tiny_model, prompts, steers, transcoders, first_logits=first, watch=(30, 31),
        temperature=0.0, **kwargs,
    )  # fmt: skip
    assert seen == [4]  # rows 3 and 4 repeat rows 0 and 1; row 5 is another object
    for i, twin in ((3, 0), (4, 1)):
        assert outs[i] == outs[twin] and outs[i] is not outs[twin]
        assert torch.equal(first[i], first[twin])
    for i in (0, 1, 2, 5):
        alone: dict[int, torch.Tensor] = {}
        one = generate_steered(
            tiny_model, [prompts[i]], [steers[i]], transcoders, first_logits=alone,
            watch=(30, 31), temperature=0.0, **kwargs,
        )  # fmt: skip
        assert outs[i] == one[0]
        torch.testing.assert_close(first[i], alone[0], rtol=1e-5, atol=1e-5)
    assert outs[5] == outs[1] and outs[0] != outs[1]
    keys = [10, 11, 12, 13, 14, 15]  # the computed rows keep theirs
    assert (
        generate_steered(
            tiny_model, prompts, steers, transcoders, temperature=0.0, row_keys=keys, **kwargs
        )
        == outs
    )
    seen.clear()
    generate_steered(tiny_model, prompts, steers, transcoders, temperature=0.7, **kwargs)
    assert seen == [6]  # sampled rows draw their own noise: every row is computed


def test_condition_kl_equals_each_intervention_by_hand(tiny_model) -> None:
    """Each neuron intervention's KL on text, against a forward with its hook entered by hand;
    no intervention gives exactly 0, and a strength of 1 (the identity) 0 up to the rounding
    of the batch it shares with another row (the plain rows run alone)."""
    feats = torch.arange(0, 128, 3)
    transcoders = {1: TC, 2: TC2}
    steers = [None, FeatureSteer(1, feats, 1.0), FeatureSteer(1, feats, 4.0)]
    steers.append(FeatureSteer(2, torch.arange(64), 0.0))
    texts = [PROMPTS[0], PROMPTS[2]]
    got = condition_kl(tiny_model, texts, steers, transcoders, batch_size=3)

    def by_hand(steer: FeatureSteer) -> float:
        total = 0.0
        for text in texts:
            ids = torch.tensor([text])
            with torch.no_grad():
                plain = torch.log_softmax(tiny_model(ids).logits[0].double(), dim=-1)
                with steer_features(
                    tiny_model, transcoders[steer.layer], steer.features, steer.strength
                ):
                    hooked = torch.log_softmax(tiny_model(ids).logits[0].double(), dim=-1)
            total += float((hooked.exp() * (hooked - plain)).sum())
        return total / sum(map(len, texts))

    assert got[0] == 0.0 and abs(got[1]) < 1e-6
    assert got[2:] == pytest.approx([by_hand(s) for s in steers[2:]], rel=1e-4, abs=1e-7)
    assert min(got[2:]) > 1e-4  # the interventions move the distribution
